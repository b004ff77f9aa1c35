"""External tools served over NATS request/reply by any process, in any language.

A tool server announces its spec under `<tenant>.<name>` in the `<PREFIX>_TOOLS` bucket and
answers `<prefix>.tool.<tenant>.<name>` in a queue group. `ExternalToolDirectory` mirrors the
bucket in memory; `NatsTool` calls one of its tools. NATS errors are translated here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from flotilla.runtime import TOOLS_TTL_S, ensure_bucket
from schemas import Subjects, is_token
from workers.tools._base import ToolContext, ToolResult, ToolSpec, reply_result

__all__ = ["ExternalToolDirectory", "NatsTool", "parse_announcement"]

log = logging.getLogger(__name__)

_DELETED = frozenset({"DEL", "PURGE"})
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def parse_announcement(key: str, value: bytes) -> tuple[str, ToolSpec] | None:
    """(tenant, spec) from one bucket entry; None when the entry is not a valid announcement."""
    tenant, _, name = key.partition(".")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or not is_token(tenant) or body.get("name") != name:
        return None
    description = body.get("description", "")
    parameters = body.get("parameters") or _EMPTY_SCHEMA
    timeout_ms = body.get("timeout_ms")
    if not (is_token(name) and isinstance(description, str) and isinstance(parameters, dict)):
        return None
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float) or timeout_ms <= 0
    ):
        return None
    spec = ToolSpec(
        name=name,
        description=description,
        parameters=parameters,
        idempotent=body.get("idempotent") is True,
        timeout_s=None if timeout_ms is None else timeout_ms / 1000,
    )
    return tenant, spec


class ExternalToolDirectory:
    """An in-memory mirror of the tools bucket: lookups are in-process reads, never I/O.

    An entry not refreshed within the bucket's TTL counts as gone even before the broker
    expires it (expiry leaves no delete marker for watchers to see).
    """

    def __init__(self, nc: NATS, *, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects
        self._tools: dict[tuple[str, str], tuple[ToolSpec, float]] = {}
        self._ttl_s = TOOLS_TTL_S
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load every current announcement, then follow changes in the background."""
        kv = await ensure_bucket(self._nc.jetstream(), self._subjects.tools_bucket, ttl=TOOLS_TTL_S)
        self._ttl_s = (await kv.status()).ttl or TOOLS_TTL_S
        self._watcher = await kv.watchall()
        async for entry in self._watcher:
            if entry is None:  # the end of the current values
                break
            self._apply(entry)
        self._task = asyncio.create_task(self._follow(self._watcher), name="tool-directory")

    async def close(self) -> None:
        """Stop following the bucket; idempotent."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def get(self, tenant: str, name: str) -> ToolSpec | None:
        """The spec of a tool announced for `tenant`, if it is served right now."""
        found = self._tools.get((tenant, name))
        if found is None or self._stale(found[1]):
            return None
        return found[0]

    def names(self, tenant: str) -> list[str]:
        """The names of every tool served for `tenant`, sorted."""
        return sorted(
            name
            for (t, name), (_, seen) in self._tools.items()
            if t == tenant and not self._stale(seen)
        )

    def tool(self, tenant: str, name: str) -> NatsTool | None:
        """A callable tool for a served spec, or None."""
        spec = self.get(tenant, name)
        if spec is None:
            return None
        return NatsTool(spec, tenant=tenant, nc=self._nc, subjects=self._subjects)

    def _stale(self, seen: float) -> bool:
        return time.monotonic() - seen > self._ttl_s

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: KeyValue.Entry) -> None:
        tenant, _, name = entry.key.partition(".")
        if entry.operation in _DELETED or not entry.value:
            self._tools.pop((tenant, name), None)
            return
        parsed = parse_announcement(entry.key, entry.value)
        if parsed is None:
            log.warning("ignoring an invalid tool announcement under %r", entry.key)
            self._tools.pop((tenant, name), None)
            return
        self._tools[(tenant, name)] = (parsed[1], time.monotonic())


class NatsTool:
    """A tool whose every call is a NATS request to the servers of `<tenant>.<name>`."""

    def __init__(self, spec: ToolSpec, *, tenant: str, nc: NATS, subjects: Subjects) -> None:
        self._spec = spec
        self._tenant = tenant
        self._nc = nc
        self._subject = subjects.tool(tenant, spec.name)

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Send the call and wait for the reply, within the spec's or the fleet's timeout."""
        timeout = self._spec.timeout_s or ctx.settings.tool_timeout_s
        try:
            body = orjson.dumps(
                {
                    "session_id": ctx.session_id,
                    "tenant": self._tenant,
                    "call_id": ctx.call_id,
                    "tool": self._spec.name,
                    "args": args,
                    "user_data": ctx.user_data,
                }
            )
        except TypeError as exc:
            return ToolResult.error(f"tool {self._spec.name!r}: arguments are not JSON: {exc}")
        reply = await self._request(body, timeout)
        if isinstance(reply, ToolResult):
            return reply
        return self._interpret(reply)

    async def _request(self, body: bytes, timeout: float) -> bytes | ToolResult:
        name = self._spec.name
        try:
            msg = await self._nc.request(self._subject, body, timeout=timeout)
        except nats.errors.NoRespondersError:
            return ToolResult.error(f"tool {name!r} has no server running")
        except nats.errors.TimeoutError:
            return ToolResult.error(f"tool {name!r} did not answer within {timeout:g} s")
        except nats.errors.MaxPayloadError:
            return ToolResult.error(f"tool {name!r}: the call is too large for NATS")
        except nats.errors.Error as exc:
            return ToolResult.error(f"tool {name!r} is unreachable: {type(exc).__name__}")
        return msg.data

    def _interpret(self, data: bytes) -> ToolResult:
        return reply_result(data) or ToolResult.error(
            f"tool {self._spec.name!r} sent a malformed reply (want {{result}} or {{error}})"
        )
