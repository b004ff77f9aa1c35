"""Read-only views of a session for the HTTP API, straight from the state the workers persist.

The gateway never loads a session: it reads the record the owning worker rewrites at every
step boundary (flotilla/keys.py), so a view is at most one step old and costs one Redis
read. A session of another tenant reads as missing.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from flotilla.keys import RedisKeys
from schemas import (
    CheckpointView,
    GatewayState,
    MessageView,
    PendingApprovalView,
    SessionDetail,
    SessionStats,
    TokenUsageView,
    ToolCallView,
)

__all__ = ["SessionReader", "gateway_state", "iso_ms", "parent_of"]

_WORKING = frozenset({"running", "streaming", "executing_tools"})


def gateway_state(state: dict[str, Any]) -> GatewayState:
    """cmdc_gateway's five states from the persisted record."""
    if state.get("status") == "hibernated":
        return "hibernated"
    if any(a.get("decision") is None for a in state.get("pending_approvals") or []):
        return "waiting_approval"
    if any(q.get("kind") == "ask_user" for q in state.get("pending_questions") or []):
        return "waiting_input"
    if state.get("status") in _WORKING or state.get("current"):  # a turn runs, or waits
        return "working"  # on a sub-agent
    return "idle"


class SessionReader:
    def __init__(self, redis: aioredis.Redis, *, key_prefix: str) -> None:
        self._redis = redis
        self._keys = RedisKeys(key_prefix)

    async def state(self, sid: str, tenant: str) -> dict[str, Any] | None:
        """The persisted state of `tenant`'s session `sid`, if it exists."""
        raw = await self._redis.hget(self._keys.state(tenant, sid), "d")
        if raw is None:
            return None
        state: dict[str, Any] = orjson.loads(raw)
        return state

    @staticmethod
    def detail(state: dict[str, Any]) -> SessionDetail:
        usage = state.get("usage") or {}
        return SessionDetail(
            session_id=state["sid"],
            state=gateway_state(state),
            turns=state.get("turns", 0),
            tool_calls=state.get("tool_calls", 0),
            total_tokens=usage.get("total_tokens", 0),
            uptime_ms=max(0, int(time.time() * 1000) - int(state.get("created_ms", 0))),
            model=state.get("model", ""),
            group_id=(state.get("options") or {}).get("group_id"),
            parent_id=parent_of(state),
            pending_approvals=[
                PendingApprovalView(
                    approval_id=a["approval_id"], tool_name=a["tool"], args=a.get("args") or {}
                )
                for a in state.get("pending_approvals") or []
                if a.get("decision") is None
            ],
        )

    @staticmethod
    def stats(state: dict[str, Any]) -> SessionStats:
        usage = state.get("usage") or {}
        return SessionStats(
            session_id=state["sid"],
            turns=state.get("turns", 0),
            total_tokens=usage.get("total_tokens", 0),
            cost_usd=usage.get("cost_usd", 0.0),
            prompt_count=state.get("prompt_count", 0),
            token_usage=TokenUsageView(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ),
        )

    async def messages(self, tenant: str, sid: str) -> list[MessageView]:
        raw = await self._redis.lrange(self._keys.history(tenant, sid), 0, -1)
        views = []
        for item in raw:
            message = orjson.loads(item)
            views.append(
                MessageView(
                    role=message.get("role", ""),
                    content=message.get("content"),
                    tool_calls=[
                        ToolCallView(
                            call_id=call.get("call_id", ""),
                            name=call.get("name", ""),
                            arguments=call.get("arguments"),
                        )
                        for call in message.get("tool_calls") or []
                    ]
                    or None,
                    thinking=message.get("thinking") or None,
                    call_id=message.get("call_id"),
                    name=message.get("name"),
                    is_error=message.get("is_error"),
                )
            )
        return views

    async def checkpoints(self, tenant: str, sid: str) -> list[CheckpointView]:
        index: list[bytes] = await self._redis.zrange(self._keys.checkpoints(tenant, sid), 0, -1)  # type: ignore[assignment]
        ids = [i.decode() for i in index]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for checkpoint_id in ids:
                pipe.hmget(self._keys.checkpoint(tenant, sid, checkpoint_id), ["l", "c", "b"])
            rows = await pipe.execute()
        return [
            CheckpointView(
                checkpoint_id=checkpoint_id,
                label=(label or b"").decode() or None,
                created_at=iso_ms(int(created)),
                bytes=int(size or 0),
            )
            for checkpoint_id, (label, created, size) in zip(ids, rows, strict=True)
            if created is not None  # expired meanwhile
        ]


def parent_of(state: dict[str, Any]) -> str | None:
    """The parent session of a sub-agent's persisted state (None for a top-level one)."""
    parent = state.get("parent")
    return str(parent["sid"]) if isinstance(parent, dict) and parent.get("sid") else None


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, millisecond precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
