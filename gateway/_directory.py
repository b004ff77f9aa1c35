"""The fleet-wide session directory (cmdc_gateway's SessionStore) in Redis.

One hash per session (tenant, model, creation time, group, the id of the key that created
it, its parent if it is a sub-agent, and the event-stream watermark of its last accepted
prompt), indexed by sorted sets per tenant (top-level sessions), per parent (sub-agents), per
key and one for the whole fleet. Every gateway replica reads and writes the
same entries; the gateway's event watcher removes an entry when its session stops, whoever
stopped it, and adds sessions created without the gateway (SDK, plain NATS).

An entry and its indexes are in different Redis Cluster slots, so they are written in one
pipeline but not one transaction: a reader skips index members whose entry is gone, and
both writes may be applied again (the watcher sees every creation and every stop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from flotilla.keys import parse_member, session_member

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
    parent: str | None = None
    """A sub-agent's parent session: listed under it, not among the tenant's sessions."""

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
        if self.parent:
            fields["parent"] = self.parent
        return fields


class SessionDirectory:
    """create / get / delete / list (all, by tenant, by parent, by key) / count, shared by
    replicas. A session is named by its tenant and its id (ids are chosen per tenant)."""

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}:gw:dir"

    def _entry_key(self, tenant: str, sid: str) -> str:
        return f"{self._prefix}:s:{session_member(tenant, sid)}"

    def _tenant_key(self, tenant: str) -> str:
        return f"{self._prefix}:t:{tenant}"

    def _api_key_key(self, key_id: str) -> str:
        return f"{self._prefix}:k:{key_id}"

    def _parent_key(self, tenant: str, parent: str) -> str:
        return f"{self._prefix}:p:{session_member(tenant, parent)}"

    @property
    def _all_key(self) -> str:
        return f"{self._prefix}:all"

    def _listed_in(self, entry: DirectoryEntry) -> str:
        """The index that lists `entry`: its parent's for a sub-agent, else its tenant's."""
        if entry.parent:
            return self._parent_key(entry.tenant, entry.parent)
        return self._tenant_key(entry.tenant)

    async def create(self, entry: DirectoryEntry) -> None:
        """Record `entry`. Writing it again (the watcher seeing the session created) only sets
        the fields it has: the creating key and the watermark stay."""
        member = session_member(entry.tenant, entry.sid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._entry_key(entry.tenant, entry.sid), mapping=entry.mapping())  # type: ignore[arg-type]
            pipe.zadd(self._listed_in(entry), {entry.sid: entry.created_ms})
            pipe.zadd(self._all_key, {member: entry.created_ms})
            if entry.key_id:
                pipe.zadd(self._api_key_key(entry.key_id), {member: entry.created_ms})
            await pipe.execute()

    async def get(self, tenant: str, sid: str) -> DirectoryEntry | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._entry_key(tenant, sid))  # type: ignore[assignment]
        return _entry(sid, raw) if raw else None

    async def owner(self, tenant: str, sid: str) -> str | None:
        """The id of the key that created the session (the meter's account), if a key did."""
        raw = await self._redis.hget(self._entry_key(tenant, sid), "key")
        return _decoded(raw) if raw else None

    async def delete(self, tenant: str, sid: str) -> bool:
        """Remove a session's entry; False when there is none. The entry goes last: it
        names the indexes, so a delete that failed half way can be made again."""
        entry = await self.get(tenant, sid)
        if entry is None:
            return False
        member = session_member(tenant, sid)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self._listed_in(entry), sid)
            pipe.zrem(self._all_key, member)
            if entry.key_id:
                pipe.zrem(self._api_key_key(entry.key_id), member)
            await pipe.execute()
        await self._redis.delete(self._entry_key(tenant, sid))
        return True

    async def set_watermark(self, tenant: str, sid: str, seq: int) -> None:
        """The FLOTILLA_EVT sequence when a prompt was accepted: where a cursor-less SSE
        stream starts (PROTOCOL §8)."""
        await self._redis.hset(self._entry_key(tenant, sid), "wm", seq)

    async def watermark(self, tenant: str, sid: str) -> int | None:
        raw = await self._redis.hget(self._entry_key(tenant, sid), "wm")
        return int(raw) if raw else None

    async def list_all(self, *, limit: int = 1000) -> list[DirectoryEntry]:
        return await self._list(self._all_key, limit, tenant=None)

    async def list_by_tenant(self, tenant: str, *, limit: int = 1000) -> list[DirectoryEntry]:
        """The tenant's top-level sessions (sub-agents are listed under their parent)."""
        return await self._list(self._tenant_key(tenant), limit, tenant=tenant)

    async def list_children(
        self, tenant: str, parent: str, *, limit: int = 1000
    ) -> list[DirectoryEntry]:
        """The live sub-agents of the tenant's session `parent`."""
        return await self._list(self._parent_key(tenant, parent), limit, tenant=tenant)

    async def list_by_key(self, key_id: str, *, limit: int = 1000) -> list[DirectoryEntry]:
        return await self._list(self._api_key_key(key_id), limit, tenant=None)

    async def count(self) -> int:
        return int(await self._redis.zcard(self._all_key))

    async def _list(self, index: str, limit: int, *, tenant: str | None) -> list[DirectoryEntry]:
        """The entries of an index; its members are sids of `tenant`, or `tenant.sid`."""
        members = [_decoded(m) for m in await self._redis.zrange(index, 0, limit - 1)]
        named = [(tenant, m) if tenant else parse_member(m) for m in members]
        if not named:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner, sid in named:
                pipe.hgetall(self._entry_key(owner, sid))
            rows = await pipe.execute()
        return [_entry(sid, raw) for (_, sid), raw in zip(named, rows, strict=True) if raw]


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
        parent=text(b"parent"),
    )
