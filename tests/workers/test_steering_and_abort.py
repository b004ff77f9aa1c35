"""Steering, abort and the prompt strategies against a busy session."""

from __future__ import annotations

from typing import Any

from flotilla import Session
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end

SLOW = {"text": "a slow answer streaming in many small pieces", "chunk_delay_ms": 40}


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    return await fleet.fleet.create_agent(
        model="mock:script", provider_opts=script(*steps), **options
    )


async def test_steer_while_streaming_is_applied_at_the_next_step(fleet: Harness) -> None:
    session = await _session(
        fleet, {**SLOW, "tool_calls": [call("list_dir")]}, {"text": "steered"}, tools=["list_dir"]
    )
    await session.prompt("go")
    await until(session, "message_delta")
    await session.steer("look at the docs only", ref="s1")
    events = await until_end(session)
    assert of_type(events, "steering_received") == [{"ref": "s1", "status": "queued"}]
    assert of_type(events, "steering_applied") == [{"refs": ["s1"], "count": 1}]
    history = await fleet.history(session.sid)
    assert {"role": "user", "content": "look at the docs only"} in history


async def test_steer_when_idle_starts_a_turn(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "ok"})
    await session.steer("do this instead", ref="s2")
    events = await until_end(session)
    assert of_type(events, "steering_applied") == [{"refs": ["s2"], "count": 1}]
    assert events[-1].data["reason"] == "finished"


async def test_steering_beyond_the_queue_limit_is_refused(fleet: Harness) -> None:
    session = await _session(fleet, SLOW, max_steering_queue=1)
    await session.prompt("go")
    await until(session, "message_delta")
    await session.steer("one", ref="a")
    await session.steer("two", ref="b")
    statuses = [(await until(session, "steering_received"))[-1].data["status"] for _ in range(2)]
    assert statuses == ["queued", "rejected_full"]
    assert (await until(session, "error"))[-1].data["code"] == "queue_full"


async def test_abort_while_streaming_ends_the_turn_and_drops_the_queue(fleet: Harness) -> None:
    session = await _session(fleet, SLOW, {"text": "never"})
    await session.prompt("go")
    await session.prompt("queued one")
    await until(session, "message_delta")
    await session.abort(reason="changed my mind")
    events = await until(session, "prompt_dropped")
    assert of_type(events, "agent_abort") == [{"reason": "changed my mind"}]
    assert of_type(events, "prompt_dropped")[0]["text"] == "queued one"
    assert not of_type(events, "agent_end")


async def test_abort_kills_a_running_tool_and_says_so(harness_factory: Any) -> None:
    fleet = await (await harness_factory(shell_enabled=True)).start_fleet("w1")
    session = await _session(
        fleet, {"tool_calls": [call("shell", command="sleep 30")]}, tools=["shell"]
    )
    await session.prompt("go")
    await until(session, "tool_execution_start")
    await session.abort(kill_tools="all")  # shell is immune: only `all` kills it
    events = await until(session, "tool_killed")
    assert of_type(events, "agent_abort")
    assert of_type(events, "tool_killed")[0]["name"] == "shell"
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and results[0]["content"].startswith("aborted")


async def test_abort_when_idle_says_there_is_nothing_to_abort(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"})
    await session.abort()
    assert (await until(session, "error"))[-1].data["code"] == "not_running"


async def test_prompt_with_reject_strategy_is_refused_while_busy(fleet: Harness) -> None:
    session = await _session(fleet, SLOW)
    await session.prompt("go")
    await until(session, "message_delta")
    await session.prompt("not now", strategy="reject")
    rejected = (await until(session, "prompt_rejected"))[-1].data
    assert rejected == {"text": "not now", "reason": "busy"}


async def test_interrupt_aborts_the_turn_and_keeps_its_messages(fleet: Harness) -> None:
    session = await _session(
        fleet, {"tool_calls": [call("list_dir")]}, SLOW, {"text": "second"}, tools=["list_dir"]
    )
    await session.prompt("first")
    await until(session, "message_delta")
    await session.prompt("second prompt", strategy="interrupt")
    events = await until_end(session)
    assert of_type(events, "agent_abort") == [{"reason": "interrupted"}]
    reply = await until_end(session)
    assert reply[-1].data["last_message"]["content"] == "second"
    contents = [m.get("content") for m in await fleet.history(session.sid)]
    assert "first" in contents and "second prompt" in contents


async def test_rollback_removes_the_aborted_turn_from_the_history(fleet: Harness) -> None:
    session = await _session(
        fleet, {"tool_calls": [call("list_dir")]}, SLOW, {"text": "second"}, tools=["list_dir"]
    )
    await session.prompt("first")
    await until(session, "message_delta")
    await session.prompt("second prompt", strategy="rollback")
    assert of_type(await until_end(session), "agent_abort") == [{"reason": "rolled_back"}]
    await until_end(session)
    history = await fleet.history(session.sid)
    assert [m["content"] for m in history] == ["second prompt", "second"]


async def test_max_turns_bounds_the_steps_of_a_turn(fleet: Harness) -> None:
    loop = {"tool_calls": [call("list_dir")]}
    session = await _session(fleet, loop, loop, loop, loop, tools=["list_dir"], max_turns=2)
    await session.prompt("go")
    events = await until_end(session)
    assert events[-1].data["reason"] == "max_turns"
    assert len(of_type(events, "llm_call")) == 2
