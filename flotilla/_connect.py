"""Connections to NATS and Redis shared by the SDK and every service."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import hiredis
import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flotilla.errors import UnavailableError
from flotilla.settings import Settings

log = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """`url` with any password or token it carries replaced by `***`, for messages."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.hostname):
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    hidden = f"{user}:***" if parts.password is not None else "***"
    return urlunsplit(parts._replace(netloc=f"{hidden}@{host}{port}"))


async def connect_nats(settings: Settings, *, name: str) -> NATS:
    """A NATS connection that reconnects forever; fails fast only on the first connect."""

    async def _on_error(exc: Exception) -> None:
        log.warning("nats error on %s: %s", name, exc)

    try:
        return await nats.connect(
            servers=settings.nats_servers,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            error_cb=_on_error,
            pending_size=64 * 1024 * 1024,
            flusher_queue_size=4096,
        )
    except Exception as exc:
        where = ", ".join(redact_url(url) for url in settings.nats_servers)
        raise UnavailableError(f"cannot reach NATS at {where}: {exc}") from exc


class _CPackedConnection(aioredis.Connection):
    """redis-py's asyncio connection packs commands in Python (its sync client uses hiredis);
    profiling a worker put that first, so pack with hiredis's C packer here too."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # "SCRIPT LOAD" and the like: split the command words
            args = (*args[0].encode().split(), *args[1:])
        return [hiredis.pack_command(args)]


class _QueueingPool(aioredis.BlockingConnectionPool):
    """redis-py's blocking pool (past `max_connections`, a command waits for a connection
    instead of failing), without its cost when nobody waits: the blocking pool takes a
    Condition and arms a timeout for every command, about 20 % of a GET's client CPU here.
    While no command waits, connections come and go through the plain pool's path; once
    one waits, every command queues behind it (no overtaking) and releases notify."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting = 0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._waiting and self.can_get_connection():
            with contextlib.suppress(MaxConnectionsError):  # taken meanwhile: wait below
                return await aioredis.ConnectionPool.get_connection(self)  # type: ignore[no-untyped-call]
        self._waiting += 1
        try:
            return await super().get_connection()  # type: ignore[no-untyped-call]
        finally:
            self._waiting -= 1

    async def release(self, connection: Any) -> None:
        if self._waiting:
            await super().release(connection)
            return
        await aioredis.ConnectionPool.release(self, connection)
        if self._waiting:  # one started waiting while this release awaited
            async with self._condition:
                self._condition.notify()


REDIS_ERRORS: tuple[type[Exception], ...] = (
    RedisError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
)
"""What a command of `connect_redis`'s client raises when it fails: redis-py's errors, and
the two its cluster client raises outside them (no node reachable; a slot no node serves)."""

REDIS_UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
)
"""The failures that mean Redis, or a cluster's slot, cannot serve the command now (a
failover, a resharding, an outage), unlike a command Redis refused."""


def connect_redis(settings: Settings) -> aioredis.Redis:
    """The fleet's Redis client; connects lazily on first command.

    One Redis (`redis_url`), the master that Redis Sentinels name (`redis_sentinels`:
    redis-py's Sentinel client, which follows failovers), or a Redis Cluster
    (`redis_cluster`: redis-py's cluster client, which follows slot moves and failovers).

    The pool blocks: past `redis_max_connections` commands in flight, a command waits up to
    `redis_pool_timeout_s` for a connection instead of failing at once (redis-py's default
    pool raises MaxConnectionsError), so a burst of requests queues rather than erroring.
    """
    if settings.redis_sentinels:
        return _sentinel_master(settings)
    if settings.redis_cluster:
        return _cluster(settings)
    extra: dict[str, Any] = {}
    if settings.redis_url.startswith("redis://"):  # TLS and unix sockets keep their classes
        extra["connection_class"] = _CPackedConnection
    pool = _QueueingPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        **_CLIENT_OPTIONS,
        **extra,
    )
    return aioredis.Redis.from_pool(pool)


_CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": False,
    "health_check_interval": 30,
    "socket_keepalive": True,
}


class _SentinelQueueingPool(SentinelConnectionPool, _QueueingPool):
    """Sentinel's pool (connections go to the master Sentinel names now) that queues past
    its size like `_QueueingPool`."""


class _SentinelMasterClient(aioredis.Redis):
    """The master's client; closing it closes the Sentinels' clients too (redis-py leaves
    them open)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


def _sentinel_master(settings: Settings) -> aioredis.Redis:
    """A client of the master the Sentinels name; after a failover its connections move to
    the new master. Credentials and database come from `redis_url` when it carries them."""
    url = urlsplit(settings.redis_url)
    auth: dict[str, Any] = {}
    if url.username:
        auth["username"] = url.username
    if url.password:
        auth["password"] = url.password
    sentinels = []
    for address in settings.redis_sentinels:
        host, _, port = address.rpartition(":")
        sentinels.append((host, int(port)))
    sentinel = Sentinel(
        sentinels, sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    )
    return sentinel.master_for(  # type: ignore[no-any-return]
        settings.redis_sentinel_master,
        redis_class=_SentinelMasterClient,
        connection_pool_class=_SentinelQueueingPool,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        db=int(url.path.strip("/") or 0),
        # a master frozen (not dead) is failed over too: its connections must not wait forever
        socket_timeout=settings.redis_wait_timeout_s + 5.0,
        socket_connect_timeout=2.0,
        **_CLIENT_OPTIONS,
        **auth,
    )


def _cluster(settings: Settings) -> aioredis.Redis:
    """A Redis Cluster client. Typed as the plain client: the fleet sends a cluster only
    commands and scripts that name their keys, each script's keys in one slot (tests run
    the fleet against a real cluster)."""
    client = _QueueingCluster.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        queue_timeout_s=settings.redis_pool_timeout_s,
        **_CLIENT_OPTIONS,
    )
    return cast(aioredis.Redis, client)


_PERMIT_HELD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "flotilla_redis_permit", default=False
)


class _QueueingCluster(RedisCluster):
    """redis-py's cluster client, which raises MaxConnectionsError once a node's connections
    are all busy, made to queue like `_QueueingPool`: at most `max_connections` commands and
    pipelines are in flight at once (each takes one connection of a node at most), the others
    wait up to `queue_timeout_s` for their turn, first come first served."""

    def __init__(self, *args: Any, queue_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._permits = asyncio.Semaphore(kwargs["max_connections"])
        self._queue_timeout_s = queue_timeout_s

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """A turn to use the cluster; the calls redis-py makes inside one take no other."""
        if _PERMIT_HELD.get():
            yield
            return
        if self._permits.locked():
            try:
                async with asyncio.timeout(self._queue_timeout_s):
                    await self._permits.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:  # free: no timer armed (see _QueueingPool)
            await self._permits.acquire()
        held = _PERMIT_HELD.set(True)
        try:
            yield
        finally:
            _PERMIT_HELD.reset(held)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there
        # mypy takes redis-py's pipeline for abstract (an attribute it sets in __init__)
        return _QueueingClusterPipeline(self, transaction)  # type: ignore[abstract]


class _QueueingClusterPipeline(ClusterPipeline):
    """A pipeline of `_QueueingCluster`: one turn for all its commands."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = cast(_QueueingCluster, self.cluster_client)
        async with client.permit():
            return await super().execute(raise_on_error, allow_redirections)
