"""The system prompt of a request, composed per CMDC's prompt modes (seeds/003, PromptMode).

mode      user prompt | base prompt | identity | tools              | skills
full      yes         | full        | yes      | name + description | yes
task      yes         | condensed   | yes      | name + description | -
minimal   yes         | -           | yes      | names only         | -
none      yes         | -           | -        | -                  | -

Skills are those found under `skills_dirs` at `create`: each is listed with its description
and the path of its SKILL.md, which the agent reads (read_file) when it needs the skill.

Plugins' dynamic sections (`update_system_context`) follow in every mode but `none`.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas import SessionState
from workers.tools import ToolSpec

BASE_FULL = (
    "You are an agent that completes the user's task step by step. Think before acting, use "
    "the tools when they help, check the results of what you do, and say plainly when you "
    "cannot do something. Paths are relative to the session workspace. When a tool result is "
    "truncated, read the rest of it page by page with read_file."
)
BASE_TASK = "Complete the task you are given and answer with its result."


def system_prompt(state: SessionState, tools: Sequence[ToolSpec]) -> str:
    options = state.options
    mode = options.prompt_mode
    parts: list[str] = []
    if mode == "full":
        parts.append(BASE_FULL)
    elif mode == "task":
        parts.append(BASE_TASK)
    if options.system_prompt:
        parts.append(options.system_prompt)
    if mode != "none":
        parts.append(f"Session: {state.sid}. Model: {state.model}.")
        if tools and mode == "minimal":
            parts.append("Tools: " + ", ".join(t.name for t in tools))
        elif tools:
            parts.append(
                "Tools:\n"
                + "\n".join(f"- {t.name}: {t.description.splitlines()[0]}" for t in tools)
            )
        if state.skills and mode == "full":
            parts.append(
                "Skills (read a skill's SKILL.md with read_file before you use it):\n"
                + "\n".join(
                    f"- {s['name']}: {s.get('description') or 'no description'} ({s['path']})"
                    for s in state.skills
                )
            )
        if state.todos:
            parts.append(
                "Todos:\n"
                + "\n".join(f"- [{t.get('status')}] {t.get('content')}" for t in state.todos)
            )
        # sections set by plugins (memory, plan...), in key order, after everything else
        parts.extend(state.system_context[key] for key in sorted(state.system_context))
    return "\n\n".join(parts)
