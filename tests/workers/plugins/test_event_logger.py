"""EventLogger: one JSON line per hook in the workspace, secrets left out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import EventLogger, Hook, PluginChain, PluginContext, PluginOptsError

TOOL = {
    "name": "shell",
    "call_id": "c1",
    "args": {"command": "GITHUB_TOKEN=ghp_abc git push", "api_key": "sk-1", "password": "p"},
}


def _lines(io: MemoryIO, path: str = ".flotilla/events.jsonl") -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in io.files[path].splitlines()]


async def test_each_hook_is_one_json_line(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain = PluginChain([EventLogger({})])
    await chain.run(Hook.SESSION_START, {}, {}, ctx, io)
    await chain.run(Hook.BEFORE_PROMPT, {"text": "hello"}, {}, ctx, io)
    first, second = _lines(io)
    assert set(first) == {"ts", "hook", "session_id", "turn", "payload"}
    assert (first["hook"], first["session_id"], first["turn"]) == ("session_start", "s1", 1)
    assert second["payload"] == {"text": "hello"}


async def test_secrets_are_dropped_or_masked(ctx: PluginContext) -> None:
    io = MemoryIO()
    await PluginChain([EventLogger({})]).run(Hook.BEFORE_TOOL, TOOL, {}, ctx, io)
    (line,) = _lines(io)
    assert line["payload"]["args"] == {"command": "GITHUB_TOKEN=*** git push"}
    assert "sk-1" not in io.files[".flotilla/events.jsonl"]


async def test_long_values_are_cut_and_messages_counted(ctx: PluginContext) -> None:
    io = MemoryIO()
    payload = {"messages": [{"role": "user", "content": "x"}] * 7, "result": "r" * 5000}
    await PluginChain([EventLogger({})]).run(Hook.BEFORE_COMPACT, payload, {}, ctx, io)
    logged = _lines(io)[0]["payload"]
    assert logged["messages"] == {"count": 7}
    assert logged["result"] == "r" * 200 + "… (5000 chars)"
    io.files.clear()
    await PluginChain([EventLogger({"level": "debug"})]).run(
        Hook.BEFORE_COMPACT, payload, {}, ctx, io
    )
    assert _lines(io)[0]["payload"]["result"].startswith("r" * 2000 + "…")


async def test_hooks_filter_and_path(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain = PluginChain([EventLogger({"hooks": ["before_tool"], "path": "logs/audit.jsonl"})])
    await chain.run(Hook.BEFORE_PROMPT, {"text": "hello"}, {}, ctx, io)
    await chain.run(Hook.BEFORE_TOOL, TOOL, {}, ctx, io)
    assert [line["hook"] for line in _lines(io, "logs/audit.jsonl")] == ["before_tool"]


async def test_a_full_file_drops_its_older_half(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain = PluginChain([EventLogger({"max_chars": 10_000})])
    for i in range(200):
        await chain.run(Hook.BEFORE_PROMPT, {"text": f"prompt {i}"}, {}, ctx, io)
    text = io.files[".flotilla/events.jsonl"]
    assert len(text) <= 10_000
    lines = _lines(io)
    assert (
        lines[-1]["payload"]["text"] == "prompt 199" and lines[0]["payload"]["text"] != "prompt 0"
    )


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"hooks": ["on_everything"]}, "hooks must name hooks"),
        ({"level": "trace"}, "level must be"),
        ({"path": "/var/log/x"}, "relative workspace path"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        EventLogger(opts)
