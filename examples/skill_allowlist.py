"""Recipe 6.4, skill allowlists: only the tools the active skills allow may run.

The `skill_guard` plugin takes the skills of the session (here as given options; it also
finds SKILL.md files under `.flotilla/skills` in the workspace) and checks every tool call
against the union of their `allowed_tools`. In "strict" mode a call outside it is blocked and
the LLM gets the reason as the tool's error; in "warn" mode it runs and a
`skill_tool_violation` plugin event reports it.

    python -m examples.skill_allowlist
"""

from __future__ import annotations

from typing import Any

from examples._run import run_example, turn_events
from flotilla import Fleet
from schemas import Event

SKILLS: list[dict[str, Any]] = [
    # what the frontmatter of .flotilla/skills/elixir-testing/SKILL.md would declare
    {"name": "elixir-testing", "allowed_tools": ["read_file", "grep", "shell"]},
    {"name": "docs-writing", "allowed_tools": ["write_file"]},
]


def _call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"call_id": call_id, "name": name, "arguments": arguments}


SCRIPT: dict[str, Any] = {
    "script": [
        {"tool_calls": [_call("grep-1", "grep", pattern="test", path=".")]},
        {"tool_calls": [_call("write-1", "write_file", path="notes.md", content="...")]},
        {"text": "Found the tests; writing notes is not allowed for this task."},
    ]
}


async def main(fleet: Fleet, *, enforce_mode: str = "strict") -> list[Event]:
    """Run one turn under the elixir-testing skill alone: grep runs, write_file does not."""
    session = await fleet.create_agent(
        model="mock:script",
        tools=["read_file", "grep", "write_file", "shell"],
        plugins=[
            {
                "name": "CMDC.Plugin.Builtin.SkillGuard",
                "opts": {
                    "skills": SKILLS,
                    "active": ["elixir-testing"],  # default: every skill
                    "enforce_mode": enforce_mode,  # "strict" | "warn"
                },
            }
        ],
        provider_opts=SCRIPT,
    )
    try:
        await session.prompt("Find the tests and write notes about them")
        events = await turn_events(session)
    finally:
        await session.stop()
    for event in events:
        if event.type == "tool_blocked":
            print(f"  blocked {event.data['name']}: {event.data['reason']}")
        elif event.type == "tool_execution_end":
            print(f"  ran {event.data['name']}: {event.data['status']}")
        elif event.type == "plugin_event":
            print(f"  {event.data['kind']}: {event.data['payload']}")
    return events


if __name__ == "__main__":
    run_example(main)
