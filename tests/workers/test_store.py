"""The session store's pipeline against the session's real Redis (single or Cluster)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tests.conftest import redis_client, redis_refused
from workers._store import SessionStore
from workers.errors import StoreUnavailable


@pytest.fixture
async def store(servers: tuple[str, str]) -> AsyncIterator[SessionStore]:
    client = redis_client(servers[1])
    started = SessionStore(client, key_prefix=f"t{secrets.token_hex(5)}")
    await started.start()
    yield started
    await started.close()
    await client.aclose()


async def _save(store: SessionStore, sid: str, version: int) -> int:
    return await store.save(
        sid,
        epoch=1,
        version=version,
        state=b'{"v": %d}' % version,
        shard=0,
        tenant="acme",
        active=False,
        hibernate_at_ms=None,
    )


async def _flush_scripts_of(redis: aioredis.Redis, key: str) -> None:
    """Empty the script cache of the node that holds `key` (of the only one, on one Redis)."""
    if isinstance(redis, RedisCluster):
        await redis.execute_command("SCRIPT FLUSH", target_nodes=redis.get_node_from_key(key))
    else:
        await redis.script_flush()


def _on_another_node(store: SessionStore, key: str) -> str:
    """A session id whose keys a Cluster keeps on another node than `key` (any id on one)."""
    redis = store.redis
    if not isinstance(redis, RedisCluster):
        return "other"
    taken = redis.get_node_from_key(key)
    return next(
        sid
        for sid in (f"s{i}" for i in range(1000))
        if redis.get_node_from_key(store.keys.state("acme", sid)) != taken
    )


async def test_after_a_script_cache_flush_each_save_runs_once(store: SessionStore) -> None:
    key = store.keys.state("acme", "one")
    other = _on_another_node(store, key)
    assert [await _save(store, "one", 0), await _save(store, other, 0)] == [1, 1]
    await _flush_scripts_of(store.redis, key)  # on a Cluster, one node's only
    # one batch: the save that met the empty cache goes again, the other must not (Conflict)
    assert await asyncio.gather(_save(store, "one", 1), _save(store, other, 1)) == [2, 2]
    assert await store.peek("acme", "one") == b'{"v": 1}'


async def test_an_unreachable_redis_fails_the_batch_and_the_store_goes_on(
    store: SessionStore, free_tcp_port: int
) -> None:
    async with asyncio.timeout(30):
        async with redis_refused(store.redis, free_tcp_port):
            with pytest.raises(StoreUnavailable):
                await _save(store, "one", 0)
        assert await _save(store, "one", 0) == 1
