"""Session state in Redis: fenced compare-and-set writes, grouped into one pipeline per batch.

Concurrent actors' writes are coalesced ("group commit"): while one pipeline is in flight,
the next batch accumulates, so under load one round trip carries many sessions' steps and
an idle fleet pays no extra latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from flotilla.keys import RedisKeys
from workers import _metrics, _scripts
from workers.errors import Conflict, Fenced, StoreUnavailable

log = logging.getLogger(__name__)


_Queued = tuple[list[tuple[str, Sequence[Any]]], "asyncio.Future[list[Any]]"]


@dataclass(frozen=True, slots=True)
class Loaded:
    version: int
    state: bytes
    history: list[bytes]


class SessionStore:
    """Reads and fenced writes of session state; one instance per worker process."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self.redis = redis
        self.keys = RedisKeys(key_prefix)
        self._sha: dict[str, str] = {}
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.commands = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_scripts()
        self._flusher = asyncio.create_task(self._flush_forever(), name="store-flusher")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        for _, future in self._queue:
            if not future.done():
                future.set_exception(StoreUnavailable("session store closed"))
        self._queue.clear()

    async def _load_scripts(self) -> None:
        for name in ("LOAD_CLAIM", "SAVE", "DELETE"):
            self._sha[name] = await self._redis.script_load(getattr(_scripts, name))

    # -- operations --------------------------------------------------------------------------
    async def load(self, sid: str, *, epoch: int) -> Loaded | None:
        """Load and claim a session for `epoch`; None when it does not exist."""
        reply = await self._call(
            "evalsha",
            (self._sha["LOAD_CLAIM"], 2, self.keys.state(sid), self.keys.history(sid), epoch),
        )
        status = int(reply[0])
        if status == 0:
            return None
        if status == 1:
            raise Fenced(f"session {sid} is owned by epoch {reply[1]} > {epoch}")
        return Loaded(version=int(reply[1]), state=reply[2], history=list(reply[3:]))

    async def save(
        self,
        sid: str,
        *,
        epoch: int,
        version: int,
        state: bytes,
        append: Sequence[bytes] = (),
        keep: int = -1,
        shard: int,
        tenant: str,
        active: bool,
        hibernate_at_ms: int | None,
        timeout_at_ms: int | None = None,
        reschedule_timeout: bool = True,
    ) -> int:
        """Compare-and-set the state (and append history); returns the new version.

        Also keeps three indexes: the shard's set of sessions with an unfinished turn (read
        by a new owner to resume them), and the hibernation and approval-timeout schedules
        (read by the router). The approval-timeout entry is written only when
        `reschedule_timeout`: most saves leave it as it was.
        """
        member = f"{tenant}.{sid}"
        calls: list[tuple[str, Sequence[Any]]] = [
            (
                "evalsha",
                (
                    self._sha["SAVE"],
                    2,
                    self.keys.state(sid),
                    self.keys.history(sid),
                    epoch,
                    version,
                    state,
                    keep,
                    *append,
                ),
            ),
            ("sadd" if active else "srem", (self.keys.active(shard), sid)),
            _schedule(self.keys.hibernation, member, hibernate_at_ms),
        ]
        if reschedule_timeout:
            calls.append(_schedule(self.keys.approval_timeouts, member, timeout_at_ms))
        result = await self._call_many(calls)
        new_version = int(result[0])
        if new_version == -1:
            raise Fenced(f"session {sid}: epoch {epoch} is stale")
        if new_version == -2:
            raise Conflict(f"session {sid}: version {version} is not current")
        return new_version

    async def delete(self, sid: str, *, epoch: int, version: int, shard: int, tenant: str) -> None:
        """Delete a session's live state (stop)."""
        result = await self._call_many(
            [
                (
                    "evalsha",
                    (
                        self._sha["DELETE"],
                        2,
                        self.keys.state(sid),
                        self.keys.history(sid),
                        epoch,
                        version,
                    ),
                ),
                ("srem", (self.keys.active(shard), sid)),
                ("zrem", (self.keys.hibernation, f"{tenant}.{sid}")),
                ("zrem", (self.keys.approval_timeouts, f"{tenant}.{sid}")),
            ]
        )
        if int(result[0]) == -1:
            raise Fenced(f"session {sid}: epoch {epoch} is stale")
        if int(result[0]) == -2:
            raise Conflict(f"session {sid}: version {version} is not current")

    async def active_sessions(self, shard: int) -> list[str]:
        members = await self._call("smembers", (self.keys.active(shard),))
        return sorted(m.decode() for m in members)

    # -- batching ----------------------------------------------------------------------------
    async def _call(self, method: str, args: Sequence[Any]) -> Any:
        return (await self._call_many([(method, args)]))[0]

    async def _call_many(self, calls: list[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Queue `calls` for the next pipeline; they run back to back, in order."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((calls, future))
        self._wake.set()
        return await future

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._execute(batch)

    async def _execute(self, batch: list[_Queued]) -> None:
        self.batches += 1
        size = sum(len(calls) for calls, _ in batch)
        self.commands += size
        _metrics.STORE_BATCH.observe(size)
        for attempt in (1, 2):
            pipe = self._redis.pipeline(transaction=False)
            for calls, _ in batch:
                for method, args in calls:
                    getattr(pipe, method)(*args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:  # connection-level: every caller sees it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(StoreUnavailable(f"redis: {exc!r}"))
                return
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted or flushed its script cache; a SHA names its script's text,
                # so loading them again makes the same calls valid.
                await self._load_scripts()
                continue
            break
        position = 0
        for calls, future in batch:
            mine = results[position : position + len(calls)]
            position += len(calls)
            if future.done():
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


def _schedule(key: str, member: str, at_ms: int | None) -> tuple[str, tuple[Any, ...]]:
    """The write that puts `member` on a schedule at `at_ms`, or takes it off (None)."""
    return ("zadd", (key, {member: at_ms})) if at_ms is not None else ("zrem", (key, member))
