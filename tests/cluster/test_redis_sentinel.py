"""The fleet on Redis Sentinel (PROTOCOL §9): it follows a failover, and with
`FLOTILLA_REDIS_WAIT_REPLICAS` a step counts as done only once a replica has it, so a master
SIGKILL under load neither loses, doubles nor rolls back a turn."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from flotilla.embedded import EmbeddedSentinels, start_redis_sentinels
from flotilla.errors import ReplyTimeout
from flotilla.keys import RedisKeys
from flotilla.runtime import connect_redis
from tests.conftest import Harness, count_ends, eventually


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[EmbeddedSentinels]:
    group = start_redis_sentinels(tmp_path / "redis", replicas=2, sentinels=3)
    try:
        yield group
    finally:
        group.stop()


async def _fleet(harness_factory: Any, sentinels: EmbeddedSentinels) -> Harness:
    harness: Harness = await harness_factory(
        redis_sentinels=tuple(sentinels.setting.split(",")),
        redis_sentinel_master=sentinels.master_name,
    )
    assert harness.settings.wait_replicas == 1  # the default with Sentinels
    return await harness.start_fleet("w1", "w2")


async def _user_texts(harness: Harness, sid: str) -> list[str]:
    redis = connect_redis(harness.settings)
    try:
        key = RedisKeys(harness.settings.redis_prefix).history("acme", sid)
        messages = [orjson.loads(raw) for raw in await redis.lrange(key, 0, -1)]
    finally:
        await redis.aclose()
    return [str(m["content"]) for m in messages if m.get("role") == "user"]


async def test_a_master_sigkill_under_load_loses_doubles_and_rolls_back_no_turn(
    harness_factory: Any, sentinels: EmbeddedSentinels
) -> None:
    harness = await _fleet(harness_factory, sentinels)
    assert harness.fleet is not None
    sessions = [await harness.fleet.create_agent(model="mock:echo") for _ in range(12)]
    sent: dict[str, list[tuple[str, str]]] = {s.sid: [] for s in sessions}

    async def publish(rounds: int) -> None:
        for r in range(rounds):
            for session in sessions:
                text = f"{session.sid}-r{r}"
                sent[session.sid].append((await session.prompt(text), text))
            await asyncio.sleep(0.1)

    publisher = asyncio.create_task(publish(40))
    await asyncio.sleep(1.0)
    first_master = sentinels.master_port()
    sentinels.servers[0].process.kill()  # SIGKILL: what it had not replicated is gone
    await eventually(
        lambda: sentinels.master_port() != first_master, timeout=30, what="a new master"
    )
    await publisher
    ends: Counter[str] = Counter()
    wanted = {request for pairs in sent.values() for request, _ in pairs}

    def all_ended() -> bool:
        count_ends(sessions, ends)
        return wanted <= set(ends)

    await eventually(all_ended, timeout=60, what="every prompt to end")
    assert max(ends.values()) == 1, [r for r, n in ends.items() if n > 1]
    for session in sessions:  # the new master has every step: nothing rolled back or doubled
        assert await _user_texts(harness, session.sid) == [t for _, t in sent[session.sid]]


async def test_a_step_no_replica_acknowledged_is_not_done(
    harness_factory: Any, sentinels: EmbeddedSentinels
) -> None:
    harness = await _fleet(harness_factory, sentinels)
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    warm = await session.prompt("warm up")
    await session.wait_for({"agent_end"}, request_id=warm, timeout=30)

    def short_waits() -> float:
        return REGISTRY.get_sample_value("flotilla_worker_store_wait_short_total") or 0.0

    before = short_waits()
    for replica in sentinels.servers[1:]:
        replica.process.kill()
    request = await session.prompt("while no replica listens")
    await eventually(lambda: short_waits() > before, timeout=30, what="a short WAIT")
    with pytest.raises(ReplyTimeout):  # its step is not done, so the turn does not end
        await session.wait_for({"agent_end"}, request_id=request, timeout=3)
    sentinels.restart(1)
    await session.wait_for({"agent_end"}, request_id=request, timeout=60)
    assert await _user_texts(harness, session.sid) == ["warm up", "while no replica listens"]


async def test_writes_a_failover_lost_after_a_replica_acknowledged_them_are_written_again(
    harness_factory: Any, sentinels: EmbeddedSentinels
) -> None:
    """WAIT 1 counts one replica; Sentinel may promote another. Replica 2 may not be
    promoted, replica 1 is cut off while "two" is written: the failover to replica 1 loses
    "two" from Redis, though its prompt was acknowledged. The worker writes it again."""
    harness = await _fleet(harness_factory, sentinels)
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    await session.prompt("one")
    assert await session.collect_reply(timeout=30) == "echo: one"
    master, behind, keeper = sentinels.servers
    async with aioredis.Redis.from_url(keeper.url) as client:
        await client.config_set("replica-priority", 0)  # never promoted
    async with aioredis.Redis.from_url(master.url) as client:  # both replicas have "one"
        await client.set("synced", 1)
        assert await client.execute_command("WAIT", 2, 5000) == 2
    async with aioredis.Redis.from_url(behind.url) as client:
        await client.replicaof("NO", "ONE")  # cut off from the master, with "one"
        await session.prompt("two")
        assert await session.collect_reply(timeout=30) == "echo: two"  # WAIT 1: the keeper
        master.process.kill()
        await client.replicaof("127.0.0.1", master.port)  # a replica again, of a dead master
    await eventually(
        lambda: sentinels.master_port() == behind.port, timeout=30, what="replica 1 promoted"
    )

    async def texts() -> list[str] | None:
        with contextlib.suppress(redis.RedisError):
            return await _user_texts(harness, session.sid)
        return None

    await eventually(texts, timeout=30, what="the new master to answer")
    assert await texts() == ["one"]  # "two" is gone from Redis

    await session.prompt("three")
    assert await session.collect_reply(timeout=30) == "echo: three"
    assert await _user_texts(harness, session.sid) == ["one", "two", "three"]
