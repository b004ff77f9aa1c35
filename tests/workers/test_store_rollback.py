"""Redis forgetting writes it acknowledged: a Sentinel failover can promote a replica that
lacks the last writes (WAIT counted another one), so the session's keys go back to an earlier
version while the commands those writes applied are already acknowledged. The worker that
wrote them writes them again; nothing is lost."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from flotilla.keys import RedisKeys
from tests.conftest import Harness


def _rewritten() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_store_writes_lost_total") or 0.0


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


async def test_a_stopped_session_is_not_brought_back(fleet: Harness) -> None:
    """Only a version below the worker's own last write is a loss: a session stopped and
    created again under the same id starts afresh."""
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    await session.prompt("one")
    await session.collect_reply(timeout=5)
    await session.stop()
    again: Any = await fleet.fleet.create_agent(model="mock:echo", session_id=session.sid)
    await again.prompt("two")
    assert await again.collect_reply(timeout=5) == "echo: two"
    assert await _user_texts(fleet, session.sid) == ["two"]
