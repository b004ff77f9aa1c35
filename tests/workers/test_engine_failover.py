"""The engine across workers: a worker lost during a tool batch, a session that moves."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

from flotilla import ToolCall, serve_tool
from tests.conftest import Harness, eventually
from tests.engine_helpers import call, of_type, script, until, until_end

OBJECT = {"type": "object", "properties": {}, "additionalProperties": True}


async def test_a_worker_lost_during_a_tool_batch_runs_no_call_twice(harness_factory: Any) -> None:
    harness: Harness = await harness_factory()
    await harness.start_router()
    harness.spawn_worker("pa")
    harness.spawn_worker("pb")
    await harness.wait_all_shards({"pa", "pb"}, timeout=30)
    assert harness.fleet is not None
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def fast(args: dict[str, Any], call_: ToolCall) -> str:
        calls["fast"] += 1
        return "fast done"

    async def slow(args: dict[str, Any], call_: ToolCall) -> str:
        calls["slow"] += 1
        await release.wait()
        return "slow done"

    servers = [
        await serve_tool(harness.fleet, name=n, description=n, parameters=OBJECT, handler=h)
        for n, h in (("fast", fast), ("slow", slow))
    ]
    await eventually(lambda: True)
    try:
        session = await harness.fleet.create_agent(
            model="mock:script",
            tools=["fast", "slow"],
            provider_opts=script({"tool_calls": [call("fast"), call("slow")]}, {"text": "end"}),
        )
        await session.prompt("go")
        await eventually(lambda: calls["fast"] == 1 and calls["slow"] == 1, what="both calls")
        events = await until(session, "tool_execution_end")
        victim = next(p for p in harness.processes if p.worker_id == events[-1].worker)
        victim.signal(signal.SIGKILL)
        events = await until_end(session, timeout=30)
        assert of_type(events, "turn_resumed")
        assert events[-1].data["reason"] == "finished"
        assert calls == {"fast": 1, "slow": 1}
        results = {
            m["name"]: m for m in await harness.history(session.sid) if m["role"] == "tool_result"
        }
        assert results["fast"]["content"] == "fast done"
        assert results["slow"]["is_error"] and "interrupted" in results["slow"]["content"]
    finally:
        release.set()
        for server in servers:
            await server.close()


async def test_a_moved_session_keeps_workspace_script_allowlist_and_queue(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory()
    first = (await harness.start_fleet("w1")).services[-1]
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(
        model="mock:script",
        tools=["write_file", "edit_file", "read_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file", "edit_file"]}}],
        provider_opts=script(
            {"tool_calls": [call("write_file", path="a.txt", content="from w1")]},
            {"tool_calls": [call("edit_file", path="a.txt", old_string="w1", new_string="w2")]},
            {"text": "one"},
            {"tool_calls": [call("write_file", path="b.txt", content="x")]},
            {"tool_calls": [call("read_file", path="a.txt")]},
            {"text": "two"},
        ),
    )
    await session.prompt("first")
    asked = (await until(session, "approval_required"))[-1].data
    await session.approve(asked["approval_id"], kind="always")  # write_file, from now on
    asked = (await until(session, "approval_required"))[-1].data
    assert asked["tool"] == "edit_file"
    await session.prompt("second")  # queued: the first turn waits for its approval
    await until(session, "prompt_queued")
    await harness.start_worker("w2")
    await first.shutdown()
    await harness.wait_all_shards({"w2"})
    await session.approve(asked["approval_id"])
    first_turn = await until_end(session, timeout=20)
    second_turn = await until_end(session, timeout=20)
    assert first_turn[-1].data["last_message"]["content"] == "one"
    assert {e.worker for e in first_turn if e.type == "tool_execution_end"} == {"w2"}
    assert not of_type(second_turn, "approval_required")
    assert of_type(second_turn, "tool_execution_end")[-1]["result"].startswith("from w2")
    assert second_turn[-1].data["last_message"]["content"] == "two"
    assert second_turn[-1].worker == "w2"
