"""Connections to NATS and Redis shared by the SDK and every service."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import hiredis
import nats
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from redis.exceptions import MaxConnectionsError

from flotilla.errors import UnavailableError
from flotilla.settings import Settings

log = logging.getLogger(__name__)


async def connect_nats(settings: Settings, *, name: str) -> NATS:
    """A NATS connection that reconnects forever; fails fast only on the first connect."""

    async def _on_error(exc: Exception) -> None:
        log.warning("nats error on %s: %s", name, exc)

    try:
        return await nats.connect(
            settings.nats_url,
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
        raise UnavailableError(f"cannot reach NATS at {settings.nats_url}: {exc}") from exc


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


def connect_redis(settings: Settings) -> aioredis.Redis:
    """A Redis client (hiredis parsing and packing); connects lazily on first command.

    The pool blocks: past `redis_max_connections` commands in flight, a command waits up to
    `redis_pool_timeout_s` for a connection instead of failing at once (redis-py's default
    pool raises MaxConnectionsError), so a burst of requests queues rather than erroring.
    """
    extra: dict[str, Any] = {}
    if settings.redis_url.startswith("redis://"):  # TLS and unix sockets keep their classes
        extra["connection_class"] = _CPackedConnection
    pool = _QueueingPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        decode_responses=False,
        health_check_interval=30,
        socket_keepalive=True,
        **extra,
    )
    return aioredis.Redis.from_pool(pool)
