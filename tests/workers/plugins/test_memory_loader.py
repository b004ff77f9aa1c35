"""MemoryLoader: memory files into the "memory" section of the system prompt."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import Emit, Hook, MemoryLoader, PluginChain, PluginContext, PluginOptsError


def _chain(**opts: Any) -> tuple[PluginChain, dict[str, dict[str, Any]]]:
    chain = PluginChain([MemoryLoader(opts)])
    return chain, chain.initial_states()


async def test_session_start_puts_the_files_in_the_system_prompt(ctx: PluginContext) -> None:
    io = MemoryIO(files={"AGENTS.md": "Use ruff.", "MEMORY.md": "- likes LiveView\n"})
    chain, states = _chain()
    outcome = await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    section = io.system_context["memory"]
    assert "## AGENTS.md\nUse ruff." in section and "## MEMORY.md\n- likes LiveView" in section
    emit = outcome.emits[0].emit
    assert emit == Emit(
        "memory_loaded", {"files": ["AGENTS.md", "MEMORY.md"], "chars": len(section)}
    )


async def test_nothing_found_is_retried_once_per_later_turn(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain, states = _chain(files=["MEMORY.md"])
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    await chain.run(Hook.BEFORE_REQUEST, {"messages": []}, states, ctx, io)
    assert "memory" not in io.system_context and io.reads == 1, "same turn: not read again"
    io.files["MEMORY.md"] = "- restored from a checkpoint"
    later = dataclasses.replace(ctx, turn=ctx.turn + 1)
    await chain.run(Hook.BEFORE_REQUEST, {"messages": []}, states, later, io)
    assert "- restored from a checkpoint" in io.system_context["memory"]
    await chain.run(Hook.BEFORE_REQUEST, {}, states, dataclasses.replace(ctx, turn=9), io)
    assert io.reads == 2, "loaded: the default refresh reads no more"


async def test_refresh_turn_rereads_and_reports_only_changes(ctx: PluginContext) -> None:
    io = MemoryIO(files={"MEMORY.md": "- one"})
    chain, states = _chain(files=["MEMORY.md"], refresh="turn")
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    same = await chain.run(Hook.BEFORE_REQUEST, {}, states, dataclasses.replace(ctx, turn=2), io)
    assert not same.emits
    io.files["MEMORY.md"] = "- one\n- two"
    changed = await chain.run(Hook.BEFORE_REQUEST, {}, states, dataclasses.replace(ctx, turn=3), io)
    assert changed.emits[0].emit.type == "memory_loaded"
    assert io.system_context["memory"].endswith("- one\n- two")


async def test_the_section_is_bounded(ctx: PluginContext) -> None:
    io = MemoryIO(files={"AGENTS.md": "a" * 5000, "MEMORY.md": "m" * 5000})
    chain, states = _chain(max_chars=1000)
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    section = io.system_context["memory"]
    assert len(section) <= 1000
    assert section.count("[… truncated]") == 2 and "## MEMORY.md" in section


async def test_a_hot_update_of_files_reloads_at_the_next_request(ctx: PluginContext) -> None:
    io = MemoryIO(files={"MEMORY.md": "- memory", "KB.md": "- knowledge"})
    chain, states = _chain(files=["MEMORY.md"])
    await chain.run(Hook.SESSION_START, {}, states, ctx, io)
    assert chain.update_opts("memory_loader", {"files": ["KB.md"]}, states) == ("callback", None)
    await chain.run(Hook.BEFORE_REQUEST, {}, states, ctx, io)
    assert "- knowledge" in io.system_context["memory"]
    assert "- memory" not in io.system_context["memory"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"files": []}, "at least one file"),
        ({"files": ["/etc/passwd"]}, "relative workspace path"),
        ({"files": ["../x.md"]}, "relative workspace path"),
        ({"refresh": "always"}, "refresh must be"),
        ({"max_chars": 10}, "max_chars must be an integer >= 200"),
        ({"top_k": 3}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        MemoryLoader(opts)
