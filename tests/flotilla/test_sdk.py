"""The SDK's subscriptions: groups, replay cursors, gaps."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import CommandError
from schemas import Event
from tests.conftest import Harness, eventually


async def _until(stream: Any, done: Any) -> list[Event]:
    seen: list[Event] = []
    async for event in stream:
        seen.append(event)
        if done(seen):
            return seen
    return seen


async def test_group_subscription_sees_every_session_of_the_group(fleet: Harness) -> None:
    assert fleet.fleet is not None
    a = await fleet.fleet.create_agent(model="mock:echo", group_id="room-7")
    b = await fleet.fleet.create_agent(model="mock:echo", group_id="room-7")
    outsider = await fleet.fleet.create_agent(model="mock:echo")
    for session in (a, b, outsider):
        await session.prompt("hi")
        await session.collect_reply(timeout=5)
    seen = await _until(
        fleet.fleet.subscribe_group("room-7", since=0),
        lambda s: sum(e.type == "agent_end" for e in s) == 2,
    )
    assert {e.sid for e in seen} == {a.sid, b.sid}
    assert all(e.group == "room-7" for e in seen)


async def test_a_cursor_older_than_retention_gets_stream_gap_first(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory()
    await harness.start_fleet("w1")
    assert harness.fleet is not None and harness.nc is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    await session.prompt("one")
    await session.collect_reply(timeout=5)
    js = harness.nc.jetstream()
    stream = harness.settings.subjects.evt_stream
    last = (await js.stream_info(stream)).state.last_seq
    await js.purge_stream(stream, keep=1)  # what retention does to old events
    await session.prompt("two")
    await session.collect_reply(timeout=5)
    seen = await _until(session.subscribe(since=1), lambda s: s[-1].type == "agent_end")
    assert seen[0].type == "stream_gap"
    assert seen[0].data == {"requested": 1, "first_available": last}
    assert all(e.seq is not None and e.seq >= last for e in seen[1:])


async def test_provider_opts_secrets_are_not_echoed_in_events(fleet: Harness) -> None:
    assert fleet.fleet is not None
    secret = "sk-test-0123456789abcdef"
    session = await fleet.fleet.create_agent(model="mock:echo", provider_opts={"api_key": secret})
    await session.prompt("hello")
    await session.collect_reply(timeout=5)
    seen = await _until(session.subscribe(since=0), lambda s: s[-1].type == "agent_end")
    assert all(secret not in e.model_dump_json() for e in seen)


async def test_a_command_over_the_nats_payload_limit_is_refused_at_send(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    with pytest.raises(CommandError) as info:
        await session.prompt("x" * (2 * 1024 * 1024))
    assert info.value.code == "too_large"
    await session.prompt("small")
    assert await session.collect_reply(timeout=5) == "echo: small"


async def test_waiting_for_one_request_keeps_the_events_of_another(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script", provider_opts={"script": [{"text": "the answer"}]}
    )
    prompt_id = await session.prompt("question")

    async def turn_over() -> bool:  # the whole turn is in the session's buffer
        return (await fleet.state(session.sid))["turns"] == 1 and not session._events.empty()

    await eventually(turn_over, what="the turn to end")
    await session.checkpoint("after")  # passes over every event of the turn to find its own
    assert await session.collect_reply(timeout=5) == "the answer"
    assert session.last_prompt_id == prompt_id
    await session.close()
