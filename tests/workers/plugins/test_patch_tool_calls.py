"""PatchToolCalls: dangling tool calls get an error result right after their assistant message."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import Hook, PatchToolCalls, PluginChain, PluginContext, PluginOptsError
from workers.plugins._patch_tool_calls import DEFAULT_MESSAGE, dangling_calls


def _calls(*ids: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"call_id": i, "name": "shell", "arguments": {}} for i in ids],
    }


def _result(call_id: str, content: str = "ok", *, is_error: bool = False) -> dict[str, Any]:
    return {
        "role": "tool_result",
        "call_id": call_id,
        "name": "shell",
        "content": content,
        "is_error": is_error,
    }


async def test_dangling_calls_are_answered_in_place(ctx: PluginContext) -> None:
    history = [
        {"role": "user", "content": "go"},
        _calls("a", "b"),
        _result("a"),
        {"role": "user", "content": "never mind"},
    ]
    io = MemoryIO(messages=history)
    outcome = await PluginChain([PatchToolCalls({})]).run(
        Hook.BEFORE_REQUEST, {"messages": list(history)}, {}, ctx, io
    )
    assert io.messages[2:4] == [_result("a"), _result("b", DEFAULT_MESSAGE, is_error=True)]
    assert io.messages[4]["content"] == "never mind"
    (emitted,) = outcome.emits
    assert emitted.emit.data == {"calls": [{"call_id": "b", "name": "shell"}], "count": 1}


async def test_a_whole_history_is_left_alone(ctx: PluginContext) -> None:
    history = [_calls("a"), _result("a")]
    io = MemoryIO(messages=history)
    outcome = await PluginChain([PatchToolCalls({"message": "cancelled"})]).run(
        Hook.BEFORE_REQUEST, {"messages": list(history)}, {}, ctx, io
    )
    assert io.messages == history and outcome.emits == ()


def test_dangling_calls_accept_openai_style_ids() -> None:
    message = {"role": "assistant", "tool_calls": [{"id": "x", "name": "grep"}]}
    assert dangling_calls([message]) == [("x", "grep")]


def test_bad_options_are_refused() -> None:
    with pytest.raises(PluginOptsError, match="message must be a non-empty string"):
        PatchToolCalls({"message": ""})
