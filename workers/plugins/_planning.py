"""Planning (CMDC built-in, priority 200): plan first on long prompts, keep the plan in view.

With `plan_first` (the default), the first request of a turn whose prompt has at least
`min_prompt_length` characters is preceded by a request for a plan (an Intervene at
`before_request`). The model's answer is read as a plan: its numbered or bulleted lines, or
the todos of a `write_todos` call. An unreadable answer is asked again, up to
`max_plan_attempts` answers in all; then the turn goes on without a plan. A plan is
published as a `plan_generated` plugin event `{steps, attempts, source}` and set as the
system prompt section "plan", so every later request carries it; when the plan came as text
alone, the model is then told to carry it out (before_finish).

Without `plan_first` nothing is asked, but a `write_todos` call still becomes the plan
(CMDC's dynamic plan injection).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workers.plugins._base import (
    Action,
    Emit,
    Hook,
    Intervene,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset({"plan_first", "min_prompt_length", "max_plan_attempts"})
_STEP = re.compile(r"^\s*(?:\d+[.)]|[-*•]|\[[ xX]?\])\s+(.+?)\s*$")
PLAN_KEY = "plan"
PLAN_REQUEST = (
    "Before you start, write a short plan for this task: a numbered list of steps, one per "
    "line. Do not call any tool yet and do not carry out the steps in this answer."
)
PLAN_RETRY = "Your plan could not be read. Answer only with a numbered list of steps."
EXECUTE = "Now carry out the plan step by step."


class Planning(Plugin):
    """Asks for a plan before long tasks and keeps it in the system prompt."""

    name = "planning"
    priority = 200
    aliases = ("CMDC.Plugin.Builtin.Planning",)

    plan_first: bool
    min_prompt_length: int
    max_plan_attempts: int

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("planning", opts, _OPTS)
        plan_first = opts.get("plan_first", True)
        if not isinstance(plan_first, bool):
            raise PluginOptsError("planning: plan_first must be a boolean")
        min_length = opts.get("min_prompt_length", 20)
        attempts = opts.get("max_plan_attempts", 2)
        for field, value, least in (
            ("min_prompt_length", min_length, 0),
            ("max_plan_attempts", attempts, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PluginOptsError(f"planning: {field} must be an integer >= {least}")
        self.plan_first = plan_first
        self.min_prompt_length = min_length
        self.max_plan_attempts = attempts

    def initial_state(self) -> dict[str, Any]:
        return {"phase": "idle", "attempts": 0, "plan": [], "execute": False}

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        phase = state.get("phase", "idle")
        match hook:
            case Hook.AFTER_TURN:
                state.update(phase="idle", attempts=0, execute=False)
            case Hook.BEFORE_REQUEST if phase == "idle":
                state["phase"] = "acting"
                if self.plan_first and len(_last_prompt(payload)) >= self.min_prompt_length:
                    state.update(phase="planning", attempts=1)
                    return Intervene(PLAN_REQUEST)
            case Hook.AFTER_RESPONSE:
                message = payload.get("message")
                if isinstance(message, Mapping):
                    return self._read_plan(message, state, io, planning=phase == "planning")
            case Hook.BEFORE_FINISH if state.get("execute"):
                state["execute"] = False
                return Intervene(EXECUTE)
            case _:
                pass
        return None

    def _read_plan(
        self, message: Mapping[str, Any], state: dict[str, Any], io: PluginIO, *, planning: bool
    ) -> Action | None:
        todos = _todos(message)
        steps = (
            todos
            if todos is not None
            else (parse_plan(str(message.get("content") or "")) if planning else [])
        )
        if not steps:
            if not planning:
                return None
            if int(state.get("attempts", 0)) < self.max_plan_attempts and not message.get(
                "tool_calls"
            ):
                state["attempts"] = int(state.get("attempts", 0)) + 1
                return Intervene(PLAN_RETRY)
            state["phase"] = "acting"  # no readable plan: go on without one
            return None
        state.update(phase="acting", plan=steps)
        state["execute"] = planning and not message.get("tool_calls")
        io.set_system_context(PLAN_KEY, plan_section(steps))
        return Emit(
            "plan_generated",
            {
                "steps": steps,
                "attempts": int(state.get("attempts", 0)),
                "source": "write_todos" if todos is not None else "answer",
            },
        )


def parse_plan(text: str) -> list[str]:
    """The steps of a plan: its numbered (`1.`, `2)`) or bulleted (`-`, `*`) lines."""
    return [m.group(1) for line in text.splitlines() if (m := _STEP.match(line))]


def plan_section(steps: list[str]) -> str:
    """The system prompt section that carries the plan."""
    return "Plan:\n" + "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def _todos(message: Mapping[str, Any]) -> list[str] | None:
    for call in message.get("tool_calls") or []:
        if isinstance(call, Mapping) and call.get("name") == "write_todos":
            args = call.get("arguments")
            todos = args.get("todos") if isinstance(args, Mapping) else None
            if isinstance(todos, list):
                return [
                    str(t.get("content")) if isinstance(t, Mapping) else str(t)
                    for t in todos
                    if not isinstance(t, Mapping) or t.get("content")
                ]
    return None


def _last_prompt(payload: Mapping[str, Any]) -> str:
    messages = payload.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content") or "")
    return ""
