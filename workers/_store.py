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
from redis.exceptions import NoScriptError

from flotilla.keys import RedisKeys, parse_member, session_member
from flotilla.runtime import REDIS_ERRORS
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

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        wait_replicas: int = 0,
        wait_timeout_s: float = 2.0,
    ) -> None:
        """`wait_replicas` > 0: every pipeline ends with WAIT, and a batch that fewer
        replicas acknowledged in `wait_timeout_s` fails as StoreUnavailable (its commands are
        retried), so a write the fleet counts as done survives the master's failover."""
        self._wait = (wait_replicas, max(1, int(wait_timeout_s * 1000)))
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
    async def load(self, tenant: str, sid: str, *, epoch: int) -> Loaded | None:
        """Load and claim a session for `epoch`; None when it does not exist."""
        keys = self.keys
        reply = await self._call(
            "evalsha",
            (self._sha["LOAD_CLAIM"], 2, keys.state(tenant, sid), keys.history(tenant, sid), epoch),
        )
        status = int(reply[0])
        if status == 0:
            return None
        if status == 1:
            raise Fenced(f"session {sid} is owned by epoch {reply[1]} > {epoch}")
        return Loaded(version=int(reply[1]), state=reply[2], history=list(reply[3:]))

    async def peek(self, tenant: str, sid: str) -> bytes | None:
        """The persisted state of a session as another one reads it (no claim, no fencing)."""
        raw: bytes | None = await self._call("hget", (self.keys.state(tenant, sid), "d"))
        return raw

    async def save(
        self,
        sid: str,
        *,
        epoch: int,
        version: int,
        state: bytes,
        append: Sequence[bytes] = (),
        keep: int = -1,
        floor: int = 0,
        shard: int,
        tenant: str,
        active: bool,
        hibernate_at_ms: int | None,
        timeout_at_ms: int | None = None,
        reschedule_timeout: bool = True,
    ) -> int:
        """Compare-and-set the state (and append history); returns the new version, at least
        `floor`.

        Also keeps three indexes of the shard: its sessions with an unfinished turn (read by
        a new owner to resume them), and its hibernation and approval-timeout schedules
        (read by the router). They are in other slots than the session's keys, so they are
        written beside the script, in the same pipeline; each write sets the whole entry, and
        the session's next save sets it again. The approval-timeout entry is written only
        when `reschedule_timeout`: most saves leave it as it was.
        """
        member = session_member(tenant, sid)
        calls: list[tuple[str, Sequence[Any]]] = [
            (
                "evalsha",
                (
                    self._sha["SAVE"],
                    2,
                    self.keys.state(tenant, sid),
                    self.keys.history(tenant, sid),
                    epoch,
                    version,
                    state,
                    keep,
                    floor,
                    *append,
                ),
            ),
            ("sadd" if active else "srem", (self.keys.active(shard), member)),
            _schedule(self.keys.hibernation(shard), member, hibernate_at_ms),
        ]
        if reschedule_timeout:
            calls.append(_schedule(self.keys.approval_timeouts(shard), member, timeout_at_ms))
        result = await self._call_many(calls)
        new_version = int(result[0])
        if new_version == -1:
            raise Fenced(f"session {sid}: epoch {epoch} is stale")
        if new_version == -2:
            raise Conflict(f"session {sid}: version {version} is not current")
        return new_version

    async def delete(self, sid: str, *, epoch: int, version: int, shard: int, tenant: str) -> None:
        """Delete a session's live state (stop)."""
        member = session_member(tenant, sid)
        result = await self._call_many(
            [
                (
                    "evalsha",
                    (
                        self._sha["DELETE"],
                        2,
                        self.keys.state(tenant, sid),
                        self.keys.history(tenant, sid),
                        epoch,
                        version,
                    ),
                ),
                ("srem", (self.keys.active(shard), member)),
                ("zrem", (self.keys.hibernation(shard), member)),
                ("zrem", (self.keys.approval_timeouts(shard), member)),
            ]
        )
        if int(result[0]) == -1:
            raise Fenced(f"session {sid}: epoch {epoch} is stale")
        if int(result[0]) == -2:
            raise Conflict(f"session {sid}: version {version} is not current")

    async def active_sessions(self, shard: int) -> list[tuple[str, str]]:
        """(tenant, sid) of the shard's sessions with an unfinished turn."""
        members = await self._call("smembers", (self.keys.active(shard),))
        return sorted(parse_member(m) for m in members)

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
        pending = batch
        for attempt in (1, 2):
            try:
                if attempt == 2:
                    # Redis restarted or flushed its script cache, or (a cluster) a replica
                    # without them took over a slot: a SHA names its script's text, so loading
                    # them again makes the same calls valid. Only the callers that met it go
                    # again: the scripts of the others ran, and must not run twice.
                    await self._load_scripts()
                replies = await self._pipeline(pending)
            except Exception as exc:  # every caller sees it (the flusher goes on)
                for _, future in pending:
                    if not future.done():
                        future.set_exception(_failure(exc))
                return
            unloaded: list[_Queued] = []
            for (calls, future), mine in zip(pending, replies, strict=True):
                if attempt == 1 and any(isinstance(r, NoScriptError) for r in mine):
                    unloaded.append((calls, future))
                elif not future.done():
                    _settle(future, mine)
            if not unloaded:
                return
            pending = unloaded

    async def _pipeline(self, batch: list[_Queued]) -> list[list[Any]]:
        """The replies to each caller's calls, sent in one pipeline."""
        pipe = self._redis.pipeline(transaction=False)
        for calls, _ in batch:
            for method, args in calls:
                getattr(pipe, method)(*args)
        replicas, timeout_ms = self._wait
        if replicas:  # same connection, after the writes: WAIT counts exactly them
            pipe.execute_command("WAIT", replicas, timeout_ms)
        results = await pipe.execute(raise_on_error=False)
        if replicas:
            acknowledged = results.pop()
            if isinstance(acknowledged, Exception):
                raise acknowledged
            if int(acknowledged) < replicas:
                _metrics.STORE_WAIT_SHORT.inc()
                raise StoreUnavailable(
                    f"{acknowledged} of {replicas} replicas acknowledged the write "
                    f"within {timeout_ms} ms"
                )
        replies = []
        position = 0
        for calls, _ in batch:
            replies.append(results[position : position + len(calls)])
            position += len(calls)
        return replies


def _settle(future: asyncio.Future[list[Any]], replies: list[Any]) -> None:
    """A caller's outcome: the first error among the replies to its calls, else the replies."""
    error = next((r for r in replies if isinstance(r, Exception)), None)
    if error is None:
        future.set_result(replies)
    else:
        future.set_exception(error)


def _failure(exc: Exception) -> Exception:
    """What the callers of a failed pipeline get: StoreUnavailable for Redis's failures, the
    exception itself for anything else (a bug, which no retry would mend)."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, (*REDIS_ERRORS, OSError)):
        return StoreUnavailable.of(exc)
    return exc


def _schedule(key: str, member: str, at_ms: int | None) -> tuple[str, tuple[Any, ...]]:
    """The write that puts `member` on a schedule at `at_ms`, or takes it off (None)."""
    return ("zadd", (key, {member: at_ms})) if at_ms is not None else ("zrem", (key, member))
