"""Serve a tool to the fleet from any process: a NATS responder in a queue group, announced
in the `<PREFIX>_TOOLS` bucket while it runs. Instances of one tool share its calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from flotilla._provision import TOOLS_TTL_S, ensure_bucket
from flotilla._sdk import Fleet
from flotilla.errors import ConfigurationError, UnavailableError
from schemas import DEFAULT_TENANT, Subjects, is_token

__all__ = ["QUEUE_GROUP", "ToolCall", "ToolHandler", "ToolServer", "serve_tool"]

log = logging.getLogger(__name__)

QUEUE_GROUP = "flotilla-tools"
"""Every instance of a tool, in any language, joins this queue group to share its calls."""
PING_HEADER = "Flotilla-Tool-Ping"
"""A request with this header (and an empty body) asks "is anyone serving?"; not a call."""
PENDING_LIMIT = 4096
"""Calls buffered by one instance; beyond it NATS drops them and their callers time out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """Who is calling: the session, its tenant and the LLM's call id."""

    session_id: str
    tenant: str
    call_id: str
    tool: str
    user_data: dict[str, Any] = field(default_factory=dict)


ToolHandler = Callable[[dict[str, Any], ToolCall], Awaitable[str]]
"""`async (args, call) -> text`; an exception becomes an error result for the LLM."""


async def serve_tool(
    target: Fleet | NATS,
    *,
    name: str,
    description: str,
    parameters: dict[str, Any],
    handler: ToolHandler,
    tenant: str | None = None,
    idempotent: bool = False,
    timeout_ms: int | None = None,
    prefix: str | None = None,
    max_concurrency: int = 64,
) -> ToolServer:
    """Serve `handler` as tool `name` of `tenant` (default: the Fleet's, else `default`)."""
    if isinstance(target, Fleet):
        nc = target._nc
        subjects = Subjects(prefix) if prefix else target.subjects
        tenant = tenant or target.tenant
    else:
        nc, subjects, tenant = target, Subjects(prefix or "flotilla"), tenant or DEFAULT_TENANT
    if not is_token(name) or not is_token(tenant):
        raise ConfigurationError(
            f"tool name and tenant must match [A-Za-z0-9_-]{{1,64}}: {name!r}, {tenant!r}"
        )
    if not isinstance(parameters, dict):
        raise ConfigurationError("parameters must be a JSON Schema object")
    if timeout_ms is not None and timeout_ms <= 0:
        raise ConfigurationError("timeout_ms must be positive")
    announcement = {
        "name": name,
        "description": description,
        "parameters": parameters,
        "idempotent": idempotent,
        "timeout_ms": timeout_ms,
    }
    server = ToolServer(
        nc,
        subjects=subjects,
        tenant=tenant,
        announcement=announcement,
        handler=handler,
        max_concurrency=max_concurrency,
    )
    await server.start()
    return server


class ToolServer:
    """One served tool: answers calls until `close()`, refreshing its announcement meanwhile."""

    def __init__(
        self,
        nc: NATS,
        *,
        subjects: Subjects,
        tenant: str,
        announcement: dict[str, Any],
        handler: ToolHandler,
        max_concurrency: int = 64,
    ) -> None:
        self.name = str(announcement["name"])
        self.tenant = tenant
        self.subject = subjects.tool(tenant, self.name)
        self._nc = nc
        self._subjects = subjects
        self._key = f"{tenant}.{self.name}"
        self._announcement = orjson.dumps(announcement)
        self._handler = handler
        timeout_ms = announcement.get("timeout_ms")
        self._timeout_s = None if timeout_ms is None else timeout_ms / 1000
        self._slots = asyncio.Semaphore(max_concurrency)
        self._closing = asyncio.Event()
        self._close_lock = asyncio.Lock()
        self._closed = False
        self._kv: KeyValue | None = None
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, announce, and start serving; UnavailableError when NATS fails."""
        try:
            self._kv = await ensure_bucket(
                self._nc.jetstream(), self._subjects.tools_bucket, ttl=TOOLS_TTL_S
            )
            refresh_s = ((await self._kv.status()).ttl or TOOLS_TTL_S) / 3
            self._sub = await self._nc.subscribe(
                self.subject, queue=QUEUE_GROUP, pending_msgs_limit=PENDING_LIMIT
            )
            await self._nc.flush()  # the server knows the responder before anyone sees the spec
            await self._kv.put(self._key, self._announcement)
        except nats.errors.Error as exc:
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            raise UnavailableError(f"cannot serve tool {self._key}: {exc!r}") from exc
        self._task = asyncio.create_task(self._run(self._sub, refresh_s), name=f"tool {self._key}")

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Stop taking calls, let running ones finish (within `grace_s`), withdraw; idempotent."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            if self._sub is not None:
                with contextlib.suppress(Exception):
                    await self._sub.unsubscribe()
            if self._task is not None:
                done, _ = await asyncio.wait({self._task}, timeout=grace_s)
                if not done:
                    self._task.cancel("tool server closed: grace period over")
                await asyncio.gather(self._task, return_exceptions=True)
            await self._withdraw()

    async def __aenter__(self) -> ToolServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self, sub: Subscription, refresh_s: float) -> None:
        messages = sub.messages
        async with asyncio.TaskGroup() as calls:
            calls.create_task(self._refresh(refresh_s))
            while True:
                await self._slots.acquire()  # reserve a slot before taking the next call
                try:
                    msg = await anext(messages)
                except StopAsyncIteration:
                    self._slots.release()
                    return
                calls.create_task(self._answer(msg))

    async def _refresh(self, every_s: float) -> None:
        assert self._kv is not None
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every_s):
                    await self._closing.wait()
                return  # closing; reached only when the wait ended before the timeout
            try:
                await self._kv.put(self._key, self._announcement)
            except Exception as exc:
                log.warning("tool %s: announcement refresh failed: %r", self._key, exc)

    async def _withdraw(self) -> None:
        """Delete the announcement, unless another instance still answers the subject."""
        try:
            await self._nc.request(self.subject, b"", timeout=0.5, headers={PING_HEADER: "1"})
        except nats.errors.NoRespondersError:
            if self._kv is not None:
                with contextlib.suppress(Exception):
                    await self._kv.delete(self._key)
        except Exception as exc:  # another instance is slow, or NATS is gone: the TTL decides
            log.debug("tool %s: not withdrawn: %r", self._key, exc)

    async def _answer(self, msg: Msg) -> None:
        try:
            if not msg.reply:
                return
            if msg.headers and msg.headers.get(PING_HEADER):
                await msg.respond(b"{}")
                return
            reply = await self._call(msg.data)
            try:
                await msg.respond(reply)
            except nats.errors.MaxPayloadError:
                await msg.respond(orjson.dumps({"error": "the tool's result is too large"}))
        except Exception:
            log.exception("tool %s: could not answer a call", self._key)
        finally:
            self._slots.release()

    async def _call(self, data: bytes) -> bytes:
        try:
            request = orjson.loads(data)
            args = request.get("args") or {}
            user_data = request.get("user_data") or {}
            if not isinstance(args, dict) or not isinstance(user_data, dict):
                raise TypeError("args and user_data must be objects")
            call = ToolCall(
                session_id=str(request.get("session_id", "")),
                tenant=self.tenant,  # the subject's tenant, not a claim in the body
                call_id=str(request.get("call_id", "")),
                tool=self.name,
                user_data=user_data,
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
            return orjson.dumps({"error": f"malformed tool request: {exc}"})
        deadline = asyncio.timeout(self._timeout_s)
        try:
            async with deadline:
                text = await self._handler(args, call)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                return orjson.dumps({"error": f"tool {self.name!r} timed out"})
            log.warning("tool %s call %s raised %r", self._key, call.call_id, exc)
            return orjson.dumps({"error": str(exc) or type(exc).__name__})
        result = text if isinstance(text, str) else orjson.dumps(text).decode()
        return orjson.dumps({"result": result})
