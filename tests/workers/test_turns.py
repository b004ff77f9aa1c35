"""A session's commands through the fleet: create, prompt, queue, hibernate, stop."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from flotilla import CommandError
from tests.conftest import Harness, eventually


async def test_prompt_streams_an_echo_reply(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("hello fleet")
    assert await session.collect_reply(timeout=5) == "echo: hello fleet"


async def test_events_carry_the_envelope_of_the_protocol(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo", group_id="room-1")
    replay = session.subscribe(since=0)
    prompt_id = await session.prompt("abcdefghijklmnopq", meta={"k": "v"})
    await session.collect_reply(timeout=5)
    seen = []
    async for event in replay:
        seen.append(event)
        if event.type == "agent_end":
            break
    types = [e.type for e in seen]
    assert types[0] == "session_created"
    assert types[1:4] == ["prompt_received", "agent_start", "message_start"]
    deltas = [e.data["delta"] for e in seen if e.type == "message_delta"]
    assert "".join(deltas) == "echo: abcdefghijklmnopq"
    assert all(len(d) <= 8 for d in deltas)
    end = seen[-1]
    assert end.request_id == prompt_id and end.turn == 1 and end.meta == {"k": "v"}
    assert end.group == "room-1" and end.worker == "w1" and end.tenant == "acme"
    assert end.data["usage"]["total_tokens"] > 0
    assert [e.seq for e in seen] == sorted(e.seq for e in seen if e.seq is not None)


async def test_prompts_while_busy_are_queued_and_run_in_order(fleet: Harness) -> None:
    assert fleet.fleet is not None
    script = [{"text": "slow", "delay_ms": 300}]
    session = await fleet.fleet.create_agent(model="mock:script", provider_opts={"script": script})
    ids = [await session.prompt(f"p{i}") for i in range(5)]
    starts: list[str | None] = []
    queued = 0
    while len(starts) < 5:
        event = await session.wait_for(
            {"agent_start", "prompt_queued"}, request_id=None, timeout=10
        )
        if event.type == "prompt_queued":
            queued += 1
        else:
            starts.append(event.request_id)
    assert starts == ids
    assert queued == 4


async def test_reject_strategy_refuses_a_prompt_while_busy(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script", provider_opts={"script": [{"text": "x", "delay_ms": 300}]}
    )
    await session.prompt("first")
    second = await session.prompt("second", strategy="reject")
    event = await session.wait_for({"prompt_rejected"}, request_id=second, timeout=5)
    assert event.data == {"text": "second", "reason": "busy"}


async def test_commands_of_one_session_apply_in_stream_order(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    ids = [await session.prompt(f"n{i}") for i in range(30)]
    ends: list[str | None] = []
    while len(ends) < 30:
        ends.append((await session.wait_for({"agent_end"}, request_id=None, timeout=10)).request_id)
    assert ends == ids


async def test_a_command_published_twice_with_one_id_takes_effect_once(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    body = orjson.dumps({"op": "prompt", "id": "dup-1", "text": "once"})
    subject = fleet.settings.subjects.cmd("acme", session.sid, "prompt")
    for _ in range(3):
        await fleet.publish_raw(subject, body, headers={"Nats-Msg-Id": "dup-1"})
    marker = await session.prompt("marker")
    received = []
    while True:
        event = await session.wait_for(
            {"prompt_received", "prompt_queued", "agent_end"}, request_id=None, timeout=5
        )
        received.append((event.type, event.request_id))
        if event.type == "agent_end" and event.request_id == marker:
            break
    assert sum(1 for t, rid in received if rid == "dup-1" and t == "agent_end") == 1
    assert sum(1 for t, rid in received if rid == "dup-1" and t != "agent_end") == 1


async def test_hibernated_session_resumes_on_the_next_prompt(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("before")
    await session.collect_reply(timeout=5)
    hib = await session.hibernate()
    await session.wait_for({"session_hibernated"}, request_id=hib, timeout=5)
    prompt_id = await session.prompt("after")
    resumed = await session.wait_for({"session_resumed"}, request_id=prompt_id, timeout=5)
    assert resumed.data == {"from": "snapshot", "worker": "w1"}
    assert await session.collect_reply(timeout=5) == "echo: after"
    state = await fleet.redis.hget(f"{fleet.settings.prefix}:s:{{acme.{session.sid}}}", "d")
    assert orjson.loads(state)["history_len"] == 4


async def test_router_hibernates_idle_sessions(harness_factory: object) -> None:
    harness: Harness = await harness_factory(hibernate_after_ms=300)  # type: ignore[operator]
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    await session.prompt("hi")
    await session.collect_reply(timeout=5)
    await session.wait_for({"session_hibernated"}, request_id=None, timeout=5)
    await session.prompt("again")
    assert await session.collect_reply(timeout=5) == "echo: again"


async def test_stop_ends_the_session_and_deletes_its_state(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("x")
    await session.collect_reply(timeout=5)
    await session.stop()
    key = f"{fleet.settings.prefix}:s:{{acme.{session.sid}}}"
    assert await fleet.redis.exists(key) == 0
    again = await fleet.fleet.session(session.sid)
    await again.prompt("ghost")
    with pytest.raises(CommandError) as info:
        await again.collect_reply(timeout=5)
    assert info.value.code == "session_not_found"


async def test_create_with_an_existing_id_is_refused(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    with pytest.raises(CommandError) as info:
        await fleet.fleet.create_agent(model="mock:echo", session_id=session.sid)
    assert info.value.code == "already_exists"


async def test_non_retryable_provider_error_ends_the_turn_with_error(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script", provider_opts={"script": [{"error": "rate_limit"}, {"error": "auth"}]}
    )
    await session.prompt("x")
    retry = await session.wait_for({"retry"}, request_id=session.last_prompt_id, timeout=5)
    assert retry.data["reason"] == "rate_limit" and retry.data["attempt"] == 1
    with pytest.raises(CommandError) as info:
        await session.collect_reply(timeout=5)
    assert info.value.code == "auth"


async def test_replay_since_a_sequence_gives_every_later_event_once(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    for text in ("one", "two", "three"):
        await session.prompt(text)
        await session.collect_reply(timeout=5)
    everything = []
    async for event in session.subscribe(since=0):
        everything.append(event)
        if event.type == "agent_end" and event.turn == 3:
            break
    cut = everything[len(everything) // 2]
    later = []
    async for event in session.subscribe(since=cut.seq):
        later.append(event)
        if event.type == "agent_end" and event.turn == 3:
            break
    assert [e.seq for e in later] == [e.seq for e in everything if e.seq > cut.seq]  # type: ignore[operator]


async def test_many_sessions_run_concurrently(fleet: Harness) -> None:
    assert fleet.fleet is not None
    sessions = await asyncio.gather(
        *(fleet.fleet.create_agent(model="mock:echo") for _ in range(20))
    )
    for i, session in enumerate(sessions):
        await session.prompt(f"s{i}")
    replies = await asyncio.gather(*(s.collect_reply(timeout=10) for s in sessions))
    assert replies == [f"echo: s{i}" for i in range(20)]


async def test_worker_metrics_count_commands(fleet: Harness) -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("flotilla_worker_turns_total", {"reason": "finished"}) or 0
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("x")
    await session.collect_reply(timeout=5)
    await eventually(
        lambda: (
            (REGISTRY.get_sample_value("flotilla_worker_turns_total", {"reason": "finished"}) or 0)
            > before
        )
    )
