"""The shared Redis client: a burst past the pool's size waits for connections."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from flotilla.runtime import connect_redis
from tests.conftest import REDIS_CLUSTER
from tests.conftest import test_settings as settings_for


async def test_a_burst_past_the_pool_queues_instead_of_failing(
    servers: tuple[str, str],
) -> None:
    settings = settings_for(*servers, redis_max_connections=2)
    redis = connect_redis(settings)
    key = f"{settings.redis_prefix}:burst"
    try:
        # 200 commands at once over 2 connections: each waits its turn, none fails
        await asyncio.gather(*(redis.incr(key) for _ in range(200)))
        assert int(await redis.get(key)) == 200
        if not REDIS_CLUSTER:
            assert len(redis.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]
    finally:
        await redis.delete(key)
        await redis.aclose()


async def test_a_command_that_waits_too_long_for_a_connection_fails_clearly(
    servers: tuple[str, str],
) -> None:
    settings = settings_for(*servers, redis_max_connections=1, redis_pool_timeout_s=0.2)
    redis = connect_redis(settings)
    try:
        # a blocking pop holds the only connection for a second; it takes the connection
        # before it first waits on the network, so once it has run until then
        holder = asyncio.create_task(redis.blpop([f"{settings.redis_prefix}:never"], timeout=1))
        await asyncio.sleep(0)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.ping()
        await holder  # gives it back
        assert await redis.ping()
    finally:
        await redis.aclose()
