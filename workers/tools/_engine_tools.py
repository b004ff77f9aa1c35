"""Tools that the engine carries out: sub-agents, questions to the user, compaction, todos.

Each returns an effect; the text beside it is what the LLM sees until the engine replaces
it with the real outcome (the sub-agent's answer, the user's reply).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from workers.tools._base import (
    AskUserEffect,
    CompactEffect,
    SubagentEffect,
    TodosEffect,
    ToolContext,
    ToolResult,
    ToolSpec,
)

__all__ = ["AskUser", "CompactConversation", "Task", "WriteTodos"]

TODO_STATUSES = ("pending", "in_progress", "completed")
_MARKS = {"pending": "[ ]", "in_progress": "[~]", "completed": "[x]"}


def _schema(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


class Task:
    """Hands a self-contained piece of work to a sub-agent."""

    spec = ToolSpec(
        name="task",
        description=(
            "Delegate a self-contained task to a sub-agent, which works on its own and "
            "returns a final report. Describe the task completely: the sub-agent does not "
            "see this conversation."
        ),
        parameters=_schema(
            ["description"],
            description={"type": "string", "minLength": 1, "description": "The full task"},
            subagent_type={
                "type": "string",
                "description": "Name of a configured sub-agent (default: a general one)",
            },
        ),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        kind: str | None = args.get("subagent_type")
        effect = SubagentEffect(description=args["description"], subagent_type=kind)
        return ToolResult(f"delegated to sub-agent {kind or 'general'}", effect=effect)


class AskUser:
    """Pauses the turn until the user answers a question."""

    spec = ToolSpec(
        name="ask_user",
        description=(
            "Ask the user a question and wait for the answer. Use it when you cannot "
            "proceed without a decision or information only the user has."
        ),
        parameters=_schema(
            ["question"],
            question={"type": "string", "minLength": 1},
            options={
                "type": "array",
                "items": {"type": "string"},
                "description": "Suggested answers to choose from",
            },
        ),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        options: list[str] | None = args.get("options")
        effect = AskUserEffect(question=args["question"], options=options or None)
        return ToolResult("waiting for the user's answer", effect=effect)


class CompactConversation:
    """Asks the engine to summarize the conversation so far to free context."""

    spec = ToolSpec(
        name="compact_conversation",
        description=(
            "Summarize the conversation so far to free context space; use it when the "
            "conversation is long and earlier details are no longer needed verbatim."
        ),
        parameters=_schema([], reason={"type": "string", "description": "Why now"}),
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        reason: str = args.get("reason", "")
        return ToolResult("conversation compaction requested", effect=CompactEffect(reason))


class WriteTodos:
    """Replaces the session's todo list, which clients see as `todo_change` events."""

    spec = ToolSpec(
        name="write_todos",
        description=(
            "Replace your todo list for this task with the given items. Keep one item "
            "in_progress at a time and mark items completed as soon as they are done."
        ),
        parameters=_schema(
            ["todos"],
            todos={
                "type": "array",
                "items": _schema(
                    ["id", "content", "status"],
                    id={"type": ["string", "integer"]},
                    content={"type": "string", "minLength": 1},
                    status={"enum": list(TODO_STATUSES)},
                ),
            },
        ),
        idempotent=True,
    )

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        todos = [
            {"id": str(t["id"]), "content": t["content"], "status": t["status"]}
            for t in args["todos"]
        ]
        problem = _todos_problem(todos)
        if problem is not None:
            return ToolResult.error(problem)
        return ToolResult(_summary(todos), effect=TodosEffect(todos=todos))


def _todos_problem(todos: list[dict[str, str]]) -> str | None:
    repeated = sorted(i for i, n in Counter(t["id"] for t in todos).items() if n > 1)
    if repeated:
        return f"todo ids must be unique; repeated: {', '.join(repeated)}"
    bad = [t["id"] for t in todos if t["status"] not in TODO_STATUSES]
    if bad:
        return f"todo status must be one of {', '.join(TODO_STATUSES)} (ids {', '.join(bad)})"
    if not all(t["content"].strip() for t in todos):
        return "every todo needs a non-empty content"
    return None


def _summary(todos: list[dict[str, str]]) -> str:
    counts = Counter(t["status"] for t in todos)
    head = (
        f"todos updated: {counts['completed']} completed, {counts['in_progress']} in progress, "
        f"{counts['pending']} pending"
    )
    return "\n".join([head, *(f"{_MARKS[t['status']]} {t['id']}. {t['content']}" for t in todos)])
