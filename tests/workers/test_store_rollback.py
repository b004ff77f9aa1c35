"""Redis forgetting writes it acknowledged: a Sentinel failover can promote a replica that
lacks the last writes (WAIT counted another one), so the session's keys go back to an earlier
version while the commands those writes applied are already acknowledged. The worker that
wrote them writes them again; nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from flotilla.keys import RedisKeys
from tests.conftest import Harness, OwnRedis, eventually
from workers import _ops


def _rewritten() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_store_writes_lost_total") or 0.0


def _deferred() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_resumes_deferred_total") or 0.0


async def _user_texts(harness: Harness, sid: str) -> list[str]:
    return [m["content"] for m in await harness.history(sid) if m["role"] == "user"]


async def test_writes_a_failover_lost_are_written_again_by_the_worker(fleet: Harness) -> None:
    assert fleet.fleet is not None
    keys = RedisKeys(fleet.settings.redis_prefix)
    session = await fleet.fleet.create_agent(model="mock:echo")
    state_key, history_key = keys.state("acme", session.sid), keys.history("acme", session.sid)
    await session.prompt("one")
    await session.collect_reply(timeout=5)
    earlier = {key: await fleet.redis.dump(key) for key in (state_key, history_key)}
    await session.prompt("two")
    assert await session.collect_reply(timeout=5) == "echo: two"
    for key, value in earlier.items():  # the failover: the keys as they were before "two"
        await fleet.redis.restore(key, 0, value, replace=True)
    assert await _user_texts(fleet, session.sid) == ["one"]
    rewritten = _rewritten()

    await session.prompt("three")
    assert await session.collect_reply(timeout=5) == "echo: three"
    assert await _user_texts(fleet, session.sid) == ["one", "two", "three"]
    assert _rewritten() == rewritten + 1
    state = await fleet.state(session.sid)
    assert state["turns"] == 3 and state["status"] == "idle"


async def test_a_session_whose_keys_a_failover_lost_entirely_comes_back(fleet: Harness) -> None:
    assert fleet.fleet is not None
    keys = RedisKeys(fleet.settings.redis_prefix)
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("one")
    await session.collect_reply(timeout=5)
    await fleet.redis.delete(keys.state("acme", session.sid), keys.history("acme", session.sid))

    await session.prompt("two")
    assert await session.collect_reply(timeout=5) == "echo: two"
    assert await _user_texts(fleet, session.sid) == ["one", "two"]


async def test_a_session_stopped_and_created_again_is_not_brought_back(
    fleet: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a version below the worker's own last write is a loss: a session stopped and
    created again under the same id (by the same actor: the create waits in its mailbox
    while the stop is applied) starts afresh."""
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("one")
    await session.collect_reply(timeout=5)
    stop = _ops.stop

    async def stop_once_the_create_waits(actor: Any, delivery: Any, rid: str) -> None:
        await eventually(lambda: not actor.mailbox.empty(), what="the create to wait")
        await stop(actor, delivery, rid)

    monkeypatch.setattr(_ops, "stop", stop_once_the_create_waits)
    stopping = asyncio.create_task(session.stop())
    again: Any = await fleet.fleet.create_agent(model="mock:echo", session_id=session.sid)
    await stopping
    await again.prompt("two")
    assert await again.collect_reply(timeout=5) == "echo: two"
    assert await _user_texts(fleet, session.sid) == ["two"]


async def test_a_turn_an_outage_stopped_is_written_again_by_the_actor_that_resumes_it(
    harness_factory: Any, own_redis: OwnRedis
) -> None:
    """The actor that wrote the lost state exits with the outage; the worker hands its copy
    to the session's next actor, which writes it back and finishes the turn."""
    harness: Harness = await harness_factory(redis_url=own_redis.url, redis_cluster=False)
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    keys = RedisKeys(harness.settings.redis_prefix)
    script = {"script": [{"text": "one done"}, {"text": "two done", "delay_ms": 1500}]}
    session = await harness.fleet.create_agent(model="mock:script", provider_opts=script)
    await session.prompt("one")
    assert await session.collect_reply(timeout=10) == "one done"
    sid_keys = (keys.state("acme", session.sid), keys.history("acme", session.sid))
    earlier = {key: await harness.redis.dump(key) for key in sid_keys}
    two = await session.prompt("two")
    await session.wait_for({"agent_start"}, request_id=two, timeout=10)
    for key, value in earlier.items():  # the failover: "two" is gone from Redis...
        await harness.redis.restore(key, 0, value, replace=True)
    deferred = _deferred()
    own_redis.stop()  # ...and the turn's next save meets the outage: its actor exits
    await eventually(lambda: _deferred() > deferred, timeout=15, what="an actor to exit")
    rewritten = _rewritten()
    own_redis.start()

    end = await session.wait_for({"agent_end"}, request_id=two, timeout=30)
    assert end.data["last_message"]["content"] == "two done"
    assert await _user_texts(harness, session.sid) == ["one", "two"]
    assert _rewritten() == rewritten + 1
