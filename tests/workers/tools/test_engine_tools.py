"""Tools the engine carries out return an effect; write_todos checks its list first."""

from __future__ import annotations

from collections.abc import Callable

from workers.tools import (
    AskUserEffect,
    CompactEffect,
    SubagentEffect,
    TodosEffect,
    ToolCatalog,
    ToolContext,
    Workspace,
    validate_args,
)
from workers.tools._engine_tools import AskUser, CompactConversation, Task, WriteTodos

MakeContext = Callable[..., ToolContext]


async def test_task_asks_for_a_subagent(workspace: Workspace, make_ctx: MakeContext) -> None:
    args = {"description": "count the files", "subagent_type": "researcher"}
    result = await Task().run(args, make_ctx(workspace))
    assert result.effect == SubagentEffect("count the files", "researcher")


async def test_ask_user_carries_the_question_and_options(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    args = {"question": "Which one?", "options": ["a", "b"]}
    result = await AskUser().run(args, make_ctx(workspace))
    assert result.effect == AskUserEffect("Which one?", ["a", "b"])
    assert not result.is_error


async def test_compact_conversation_passes_the_reason(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    result = await CompactConversation().run({"reason": "long"}, make_ctx(workspace))
    assert result.effect == CompactEffect("long")
    assert (await CompactConversation().run({}, make_ctx(workspace))).effect == CompactEffect("")


async def test_write_todos_sets_the_list_and_summarizes_it(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    todos = [
        {"id": 1, "content": "read", "status": "completed"},
        {"id": "2", "content": "write", "status": "in_progress"},
    ]
    result = await WriteTodos().run({"todos": todos}, make_ctx(workspace))
    assert result.effect == TodosEffect(
        [
            {"id": "1", "content": "read", "status": "completed"},
            {"id": "2", "content": "write", "status": "in_progress"},
        ]
    )
    assert result.text == (
        "todos updated: 1 completed, 1 in progress, 0 pending\n[x] 1. read\n[~] 2. write"
    )


async def test_write_todos_refuses_repeated_ids(
    workspace: Workspace, make_ctx: MakeContext
) -> None:
    todos = [{"id": "a", "content": "x", "status": "pending"}] * 2
    result = await WriteTodos().run({"todos": todos}, make_ctx(workspace))
    assert result.is_error
    assert result.effect is None
    assert "repeated: a" in result.text


def test_write_todos_schema_refuses_an_unknown_status() -> None:
    spec = WriteTodos.spec
    problem = validate_args(spec, {"todos": [{"id": "a", "content": "x", "status": "done"}]})
    assert problem is not None
    assert problem.startswith("todos/0/status:")


def test_engine_tools_are_in_the_catalog() -> None:
    from flotilla import Settings

    catalog = ToolCatalog(Settings())
    for name in ("task", "ask_user", "compact_conversation", "write_todos"):
        tool = catalog.get(name)
        assert tool is not None
        assert tool.spec.name == name
