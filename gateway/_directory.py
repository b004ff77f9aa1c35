"""The fleet-wide session directory (cmdc_gateway's SessionStore) in Redis.

One hash per session (tenant, model, creation time, group, the id of the key that created
it, and the event-stream watermark of its last accepted prompt), indexed by sorted sets per
tenant and per key and one for the whole fleet. Every gateway replica reads and writes the
same entries; the gateway's event watcher removes an entry when its session stops, whoever
stopped it, and adds sessions created without the gateway (SDK, plain NATS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

__all__ = ["DirectoryEntry", "SessionDirectory"]


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    sid: str
    tenant: str
    model: str
    created_ms: int
    group: str | None = None
    key_id: str | None = None
    """The gateway key that created the session; None for sessions created over NATS."""

    def mapping(self) -> dict[str, str | int]:
        fields: dict[str, str | int] = {
            "tenant": self.tenant,
            "model": self.model,
            "created": self.created_ms,
        }
        if self.group:
            fields["group"] = self.group
        if self.key_id:
            fields["key"] = self.key_id
        return fields


class SessionDirectory:
    """create / get / delete / list (all, by tenant, by key) / count, shared by replicas."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}:gw:dir"

    def _entry_key(self, sid: str) -> str:
        return f"{self._prefix}:s:{sid}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}:t:{tenant}"

    def _api_key_key(self, key_id: str) -> str:
        return f"{self._prefix}:k:{key_id}"

    @property
    def _all_key(self) -> str:
        return f"{self._prefix}:all"

    async def create(self, entry: DirectoryEntry) -> None:
        """Record `entry`. Writing it again (the watcher seeing the session created) only sets
        the fields it has: the creating key and the watermark stay."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._entry_key(entry.sid), mapping=entry.mapping())  # type: ignore[arg-type]
            pipe.zadd(self._tenant_key(entry.tenant), {entry.sid: entry.created_ms})
            pipe.zadd(self._all_key, {entry.sid: entry.created_ms})
            if entry.key_id:
                pipe.zadd(self._api_key_key(entry.key_id), {entry.sid: entry.created_ms})
            await pipe.execute()

    async def get(self, sid: str) -> DirectoryEntry | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._entry_key(sid))  # type: ignore[assignment]
        return _entry(sid, raw) if raw else None

    async def owner(self, sid: str) -> str | None:
        """The id of the key that created `sid` (the meter's account), if a key did."""
        raw = await self._redis.hget(self._entry_key(sid), "key")
        return _decoded(raw) if raw else None

    async def delete(self, sid: str) -> bool:
        entry = await self.get(sid)
        if entry is None:
            return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._entry_key(sid))
            pipe.zrem(self._tenant_key(entry.tenant), sid)
            pipe.zrem(self._all_key, sid)
            if entry.key_id:
                pipe.zrem(self._api_key_key(entry.key_id), sid)
            await pipe.execute()
        return True

    async def set_watermark(self, sid: str, seq: int) -> None:
        """The FLOTILLA_EVT sequence when a prompt was accepted: where a cursor-less SSE
        stream starts (PROTOCOL §8)."""
        await self._redis.hset(self._entry_key(sid), "wm", seq)

    async def watermark(self, sid: str) -> int | None:
        raw = await self._redis.hget(self._entry_key(sid), "wm")
        return int(raw) if raw else None

    async def list_all(self, *, limit: int = 1000) -> list[DirectoryEntry]:
        return await self._list(self._all_key, limit)

    async def list_by_tenant(self, tenant: str, *, limit: int = 1000) -> list[DirectoryEntry]:
        return await self._list(self._tenant_key(tenant), limit)

    async def list_by_key(self, key_id: str, *, limit: int = 1000) -> list[DirectoryEntry]:
        return await self._list(self._api_key_key(key_id), limit)

    async def count(self) -> int:
        return int(await self._redis.zcard(self._all_key))

    async def _list(self, index: str, limit: int) -> list[DirectoryEntry]:
        sids = [_decoded(raw) for raw in await self._redis.zrange(index, 0, limit - 1)]
        if not sids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(self._entry_key(sid))
            rows = await pipe.execute()
        return [_entry(sid, raw) for sid, raw in zip(sids, rows, strict=True) if raw]


def _decoded(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entry(sid: str, raw: dict[bytes, Any]) -> DirectoryEntry:
    def text(name: bytes) -> str | None:
        value = raw.get(name)
        return value.decode() if value else None

    return DirectoryEntry(
        sid=sid,
        tenant=text(b"tenant") or "",
        model=text(b"model") or "",
        created_ms=int(raw.get(b"created") or 0),
        group=text(b"group"),
        key_id=text(b"key"),
    )
