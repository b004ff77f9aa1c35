"""The shared rate limiter and the meter, against the test session's real Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway._limits import Meter, RateLimiter
from tests.conftest import redis_client

KEY = "0123456789abcdef"
OTHER = "fedcba9876543210"


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
async def redis(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(servers[1])
    await client.ping()  # connected before any test's clock runs
    yield client
    await client.aclose()


async def test_two_replicas_on_two_connections_share_one_bucket(
    servers: tuple[str, str], prefix: str
) -> None:
    one, two = redis_client(servers[1]), redis_client(servers[1])
    try:
        await one.ping()  # connected (a Cluster client learns the slots) before the clock runs
        await two.ping()
        a = RateLimiter(one, key_prefix=prefix, rpm=60, burst=5)
        b = RateLimiter(two, key_prefix=prefix, rpm=60, burst=5)
        results = [await (a if i % 2 else b).take(KEY) for i in range(6)]
    finally:
        await one.aclose()
        await two.aclose()
    assert results[:5] == [None] * 5
    assert results[5] == pytest.approx(1.0, abs=0.05)  # 60 / rpm seconds


async def test_concurrent_takes_admit_exactly_the_burst(redis: aioredis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=60, burst=10)
    results = await asyncio.gather(*(limiter.take(KEY) for _ in range(50)))
    assert sum(r is None for r in results) == 10


async def test_one_token_refills_after_its_interval(redis: aioredis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=1200, burst=2)  # one token per 50 ms
    assert [await limiter.take(KEY), await limiter.take(KEY)] == [None, None]
    retry_after = await limiter.take(KEY)
    assert retry_after is not None and 0 < retry_after <= 0.05
    await asyncio.sleep(retry_after + 0.002)
    assert await limiter.take(KEY) is None
    assert await limiter.take(KEY) is not None  # one token came back, not the whole burst


async def test_refused_takes_do_not_delay_the_next_token(
    redis: aioredis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=6000, burst=1)
    assert await limiter.take(KEY) is None
    waits = [await limiter.take(KEY) for _ in range(5)]
    assert all(w is not None and w <= 0.01 for w in waits)
    await asyncio.sleep(0.012)
    assert await limiter.take(KEY) is None


async def test_rpm_zero_admits_everything_and_still_meters(
    redis: aioredis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=0)
    assert [await limiter.take(KEY) for _ in range(100)] == [None] * 100
    assert [await limiter.admit(KEY) for _ in range(20)] == [None] * 20
    assert (await Meter(redis, key_prefix=prefix).usage(KEY))["requests"] == 20


async def test_keys_have_their_own_buckets(redis: aioredis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=60, burst=1)
    assert await limiter.take(KEY) is None
    assert await limiter.take(OTHER) is None
    assert await limiter.take(KEY) is not None


async def test_idle_bucket_expires_once_full_again(redis: aioredis.Redis, prefix: str) -> None:
    slow = RateLimiter(redis, key_prefix=prefix, rpm=60, burst=5)
    for _ in range(3):
        await slow.take(KEY)
    assert 2000 < await redis.pttl(f"{prefix}:gw:rl:{{{KEY}}}") <= 3000  # 3 tokens to refill
    fast = RateLimiter(redis, key_prefix=prefix, rpm=6000, burst=2)
    await fast.take(OTHER)
    await asyncio.sleep(0.03)
    assert await redis.exists(f"{prefix}:gw:rl:{{{OTHER}}}") == 0


async def test_admit_meters_only_admitted_requests(redis: aioredis.Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, key_prefix=prefix, rpm=60, burst=2)
    results = [await limiter.admit(KEY) for _ in range(3)]
    assert results[:2] == [None, None] and results[2] is not None
    meter = Meter(redis, key_prefix=prefix)
    assert (await meter.usage(KEY))["requests"] == 2
    assert await meter.tracked_keys() == 1


async def test_a_raw_api_key_never_becomes_a_redis_key(redis: aioredis.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        await RateLimiter(redis, key_prefix=prefix, rpm=60).take("sk-live-secret")
    with pytest.raises(ValueError, match="hex"):
        await Meter(redis, key_prefix=prefix).count("sk-live-secret", requests=1)


async def test_meter_counts_per_key(redis: aioredis.Redis, prefix: str) -> None:
    meter = Meter(redis, key_prefix=prefix)
    await meter.count(KEY, requests=2, prompts=1, tokens=30, cost_usd=0.25)
    await meter.count(KEY, requests=1, tokens=12)
    await meter.count(OTHER, prompts=1)
    assert await meter.usage(KEY) == {"requests": 3, "prompts": 1, "tokens": 42, "cost_usd": 0.25}
    assert await meter.usage(OTHER) == {"requests": 0, "prompts": 1, "tokens": 0, "cost_usd": 0.0}
    assert await meter.tracked_keys() == 2


async def test_unknown_key_has_zero_usage_and_is_not_tracked(
    redis: aioredis.Redis, prefix: str
) -> None:
    meter = Meter(redis, key_prefix=prefix)
    await meter.count(KEY)  # nothing to add: not a use of the key
    assert await meter.usage(KEY) == {"requests": 0, "prompts": 0, "tokens": 0, "cost_usd": 0.0}
    assert await meter.tracked_keys() == 0


async def test_meter_cost_keeps_float_precision(redis: aioredis.Redis, prefix: str) -> None:
    meter = Meter(redis, key_prefix=prefix)
    await asyncio.gather(*(meter.count(KEY, cost_usd=0.1) for _ in range(10)))
    await asyncio.gather(*(meter.count(OTHER, cost_usd=0.000_001_5) for _ in range(100)))
    assert (await meter.usage(KEY))["cost_usd"] == pytest.approx(1.0, abs=1e-12)
    assert (await meter.usage(OTHER))["cost_usd"] == pytest.approx(0.000_15, rel=1e-12)


async def test_a_turn_is_metered_once_however_often_it_is_delivered(
    redis: aioredis.Redis, prefix: str
) -> None:
    meter = Meter(redis, key_prefix=prefix, turn_memory_s=60)
    assert await meter.count_turn(KEY, 41, tokens=100, cost_usd=0.25)
    assert not await meter.count_turn(KEY, 41, tokens=100, cost_usd=0.25)  # redelivered
    assert await meter.count_turn(KEY, 42, tokens=5, cost_usd=1e-05)  # the next turn
    usage = await meter.usage(KEY)
    assert (usage["tokens"], usage["cost_usd"]) == (105, pytest.approx(0.25001))
    assert 0 < await redis.ttl(f"{prefix}:gw:metered:{{{KEY}}}:41") <= 60
