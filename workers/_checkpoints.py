"""Checkpoints: labelled full copies of a session (state, history, workspace) in Redis, with
a TTL and a count limit, from which `create{from_checkpoint}` starts a new session.

Secrets are redacted before a copy is written: a provider key given at `create` is not in a
checkpoint, so a session restored from one passes its own `provider_opts` (seeds/000 recipe 6).
Plugin state is left out too, and what a new session does not take from a copy is listed in
workers/_sessions.py (`_NOT_RESTORED`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from flotilla.runtime import REDIS_ERRORS
from schemas import Checkpoint, is_secret_opt
from workers import _audit, _metrics
from workers._delivery import Delivery
from workers._events import now_ms
from workers.errors import StoreUnavailable

if TYPE_CHECKING:
    from workers._actor import SessionActor
    from workers._store import SessionStore

_FILE = "f:"


def _redact(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if not is_secret_opt(k)}


def redacted_state(state_json: bytes) -> dict[str, Any]:
    """The state as a checkpoint keeps it: no secrets, and no plugin state (CMDC keeps it
    out of snapshots: a session created from one rebuilds it at session_start)."""
    data: dict[str, Any] = orjson.loads(state_json)
    data.pop("plugin_states", None)
    data["provider_opts"] = _redact(data.get("provider_opts") or {})
    options = data.get("options") or {}
    options["provider_opts"] = _redact(options.get("provider_opts") or {})
    return data


def _settled(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history without a last assistant message whose tool calls have no results yet (a
    checkpoint taken while a batch runs or waits): every call in a copy has its result."""
    if history and history[-1].get("role") == "assistant" and history[-1].get("tool_calls"):
        return history[:-1]
    return history


async def checkpoint(
    actor: SessionActor, command: Checkpoint, delivery: Delivery, rid: str
) -> None:
    """The `checkpoint` command."""
    checkpoint_id, size = await save_checkpoint(actor, command.label)
    await actor.commit(delivery)
    await actor.emit(
        "checkpoint_saved",
        {"checkpoint_id": checkpoint_id, "label": command.label, "bytes": size},
        request_id=rid,
    )
    await _audit.checkpoint_saved(
        actor, checkpoint_id, label=command.label, size=size, by="user", request_id=rid
    )


async def save_checkpoint(
    actor: SessionActor,
    label: str | None,
    metadata: Mapping[str, Any] | None = None,
    *,
    keep: int | None = None,
    ttl_s: int | None = None,
) -> tuple[str, int]:
    """Save a labelled copy of the session (with `metadata`, e.g. what triggered it);
    returns its id and size in bytes. `keep` and `ttl_s` may lower the fleet's count limit
    and lifetime for this session (never raise them)."""
    state = actor.state
    assert state is not None
    store = actor.ctx.store
    settings = actor.settings
    checkpoint_id = f"ck-{secrets.token_hex(6)}"
    body = orjson.dumps(redacted_state(state.model_dump_json().encode()))
    history = orjson.dumps(_settled(actor.history))
    files = await actor.workspace.snapshot()
    size = len(body) + len(history) + sum(len(v) for v in files.values())
    created = now_ms()
    key = store.keys.checkpoint(actor.tenant, actor.sid, checkpoint_id)
    index = store.keys.checkpoints(actor.tenant, actor.sid)
    ttl = min(int(settings.checkpoint_ttl_s), ttl_s or int(settings.checkpoint_ttl_s))
    limit = min(settings.max_checkpoints, keep or settings.max_checkpoints)
    mapping: dict[str, Any] = {
        "d": body,
        "h": history,
        "t": state.tenant,
        "l": label or "",
        "m": orjson.dumps(dict(metadata or {})),
        "c": created,
        "b": size,
    }
    mapping.update({_FILE + path: data for path, data in files.items()})
    try:
        pipe = store.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
        pipe.expire(key, ttl)
        pipe.zadd(index, {checkpoint_id: created})
        pipe.expire(index, int(settings.checkpoint_ttl_s))  # as long as any checkpoint lives
        pipe.zrange(index, 0, -(limit + 1))
        *_, surplus = await pipe.execute()
        if surplus:
            stale = [store.keys.checkpoint(actor.tenant, actor.sid, c.decode()) for c in surplus]
            await store.redis.delete(*stale)
            await store.redis.zrem(index, *surplus)
    except REDIS_ERRORS as exc:
        raise StoreUnavailable.of(exc) from exc
    _metrics.CHECKPOINTS.inc()
    _metrics.CHECKPOINT_BYTES.observe(size)
    return checkpoint_id, size


async def load_checkpoint(
    store: SessionStore, sid: str, checkpoint_id: str, *, tenant: str
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, bytes]] | None:
    """(state, history, workspace files) of a checkpoint of `tenant`; None when there is none
    (another tenant's checkpoint is "none" too: its existence is not revealed)."""
    try:
        raw: dict[bytes, bytes] = await store.redis.hgetall(  # type: ignore[assignment]
            store.keys.checkpoint(tenant, sid, checkpoint_id)
        )
    except REDIS_ERRORS as exc:
        raise StoreUnavailable.of(exc) from exc
    if not raw or raw.get(b"t", b"") != tenant.encode():
        _metrics.CHECKPOINT_LOADS.labels("miss").inc()
        return None
    _metrics.CHECKPOINT_LOADS.labels("hit").inc()
    prefix = _FILE.encode()
    files = {k[len(prefix) :].decode(): v for k, v in raw.items() if k.startswith(prefix)}
    return orjson.loads(raw[b"d"]), orjson.loads(raw[b"h"]), files
