"""AutoCheckpoint: every N turns, after key tools, at chosen hooks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import AutoCheckpoint, Emit, Hook, PluginChain, PluginContext, PluginOptsError

TURN = {"outcome": "finished", "messages_diff": []}


def _chain(**opts: Any) -> tuple[PluginChain, dict[str, dict[str, Any]]]:
    chain = PluginChain([AutoCheckpoint(opts)])
    return chain, chain.initial_states()


async def test_every_n_turns_saves_on_the_nth_turn(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain, states = _chain(every_n_turns=2)
    outcomes = [await chain.run(Hook.AFTER_TURN, TURN, states, ctx, io) for _ in range(4)]
    assert [len(o.emits) for o in outcomes] == [0, 1, 0, 1]
    assert outcomes[1].emits[0].emit == Emit(
        "auto_checkpoint_saved", {"checkpoint_id": "ck-1", "trigger": "every_n_turns"}
    )
    assert io.checkpoints[0] == (
        "auto",
        {"trigger": "every_n_turns", "plugin": "auto_checkpoint", "turn": ctx.turn},
    )
    assert states["auto_checkpoint"] == {"turns": 4, "saved": 2, "last_checkpoint_id": "ck-2"}


async def test_a_listed_tool_saves_after_it_succeeds(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain, states = _chain(on_tools=["edit_file"])
    for name, is_error in (("read_file", False), ("edit_file", True), ("edit_file", False)):
        payload = {"name": name, "call_id": "c", "result": "ok", "is_error": is_error}
        await chain.run(Hook.AFTER_TOOL, payload, states, ctx, io)
    assert [m["trigger"] for _, m in io.checkpoints] == ["tool:edit_file"]


async def test_on_events_saves_at_the_named_hooks(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain, states = _chain(on_events=["session_end", ":before_compact"], every_n_turns=None)
    await chain.run(Hook.AFTER_TURN, TURN, states, ctx, io)
    await chain.run(Hook.BEFORE_COMPACT, {"messages": []}, states, ctx, io)
    outcome = await chain.run(Hook.SESSION_END, {}, states, ctx, io)
    assert [m["trigger"] for _, m in io.checkpoints] == ["before_compact", "session_end"]
    assert outcome.emits[0].emit.data == {"checkpoint_id": "ck-2", "trigger": "session_end"}


def test_cmdc_retention_options_are_accepted() -> None:
    plugin = AutoCheckpoint({"max_checkpoints": 50, "ttl_seconds": 30 * 86_400})
    assert (plugin.max_checkpoints, plugin.ttl_seconds) == (50, 2_592_000)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"on_events": ["approval_required"]}, "event names such as .approval_required. are not"),
        ({"every_n_turns": 0}, "every_n_turns must be an integer >= 1"),
        ({"on_tools": "shell"}, "on_tools must be a list of strings"),
        ({"backend": "dets"}, "a per-session backend is not supported"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        AutoCheckpoint(opts)
