"""The `task` tool runs a sub-agent as a fleet session of its own."""

from __future__ import annotations

import asyncio
from typing import Any

from flotilla import Session
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until_end

CHILD = {
    "name": "researcher",
    "description": "looks things up",
    "model": "mock:script",
    "provider_opts": {"script": [{"text": "child found 42"}]},
}


async def _parent(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    return await fleet.fleet.create_agent(
        model="mock:script",
        tools=["task"],
        subagents=[CHILD],
        group_id="team",
        user_data={"tenant_id": "t-1"},
        provider_opts=script(*steps),
        **options,
    )


async def test_a_task_runs_a_child_session_and_returns_its_answer(fleet: Harness) -> None:
    session = await _parent(
        fleet,
        {"tool_calls": [call("task", description="find the answer", subagent_type="researcher")]},
        {"text": "parent done"},
    )
    assert fleet.fleet is not None
    await session.prompt("delegate")
    events = await until_end(session)
    start, end = of_type(events, "subagent_start")[0], of_type(events, "subagent_end")[0]
    assert start["child_sid"] == end["child_sid"] != session.sid
    assert end["result"] == "child found 42"
    assert events[-1].data["last_message"]["content"] == "parent done"
    child_events = []
    async with asyncio.timeout(10):
        async for event in fleet.fleet.subscribe_group("team", since=0):
            if event.sid == start["child_sid"]:
                child_events.append(event)
                if event.type == "agent_end":
                    break
    assert child_events[0].type == "session_created"
    assert {e.group for e in child_events} == {"team"}


async def test_an_unknown_sub_agent_type_is_an_error_result(fleet: Harness) -> None:
    session = await _parent(
        fleet,
        {"tool_calls": [call("task", description="x", subagent_type="nobody")]},
        {"text": "recovered"},
    )
    await session.prompt("delegate")
    events = await until_end(session)
    assert not of_type(events, "subagent_start")
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and "unknown sub-agent type" in results[0]["content"]
    assert events[-1].data["reason"] == "finished"


async def test_a_failing_sub_agent_is_an_error_result_not_a_parent_crash(fleet: Harness) -> None:
    failing = {**CHILD, "provider_opts": {"script": [{"error": "auth"}]}}
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        tools=["task"],
        subagents=[failing],
        provider_opts=script(
            {"tool_calls": [call("task", description="x", subagent_type="researcher")]},
            {"text": "parent survived"},
        ),
    )
    await session.prompt("delegate")
    events = await until_end(session)
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and "sub-agent failed" in results[0]["content"]
    assert events[-1].data["last_message"]["content"] == "parent survived"
