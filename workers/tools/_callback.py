"""HTTP callback tools (PROTOCOL §8): a call is a signed POST to a URL the session was given.

CallbackError (ValueError)   an invalid callback tool spec; `code` = "invalid_tool"

A refused URL raises `CallbackRefused`, which is flotilla.outbound's OutboundRefused
(`code` = "callback_refused"). Addresses are checked when the tool is attached and again at
every call, and the request goes to the very address that was checked (flotilla.outbound).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from flotilla.outbound import (
    SIGNATURE_HEADER,
    OutboundError,
    OutboundRefused,
    check_url,
    parse_url,
    post_pinned,
    sign_body,
    tenant_secret,
)
from schemas import is_token
from workers.tools._base import ToolContext, ToolResult, ToolSpec, reply_result

__all__ = [
    "SIGNATURE_HEADER",
    "CallbackError",
    "CallbackRefused",
    "CallbackSpec",
    "CallbackTool",
    "check_callback_url",
    "parse_callback_spec",
    "sign_body",
    "tenant_secret",
]

MAX_REPLY_BYTES = 1024 * 1024
_ERROR_EXCERPT_CHARS = 200

CallbackRefused = OutboundRefused
"""A callback URL whose host is, or resolves to, an address the fleet must not call."""

check_callback_url = check_url
"""Refuse a URL the fleet must not call; returns the checked address (flotilla.outbound)."""


class CallbackError(ValueError):
    """An invalid callback tool spec (bad name, parameters or URL)."""

    code = "invalid_tool"


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    """A validated callback tool: what the LLM sees plus where calls go."""

    name: str
    description: str
    parameters: dict[str, Any]
    callback_url: str
    timeout_s: float | None = None

    @property
    def tool_spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters, timeout_s=self.timeout_s)

    def as_dict(self) -> dict[str, Any]:
        """The snake_case form `parse_callback_spec` reads back (for session state)."""
        timeout_ms = None if self.timeout_s is None else round(self.timeout_s * 1000)
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "callback_url": self.callback_url,
            "timeout_ms": timeout_ms,
        }


def parse_callback_spec(obj: object) -> CallbackSpec:
    """Validate `{name, description, parameters, callback_url, timeout_ms?}` (or camelCase)."""
    if not isinstance(obj, dict):
        raise CallbackError("a callback tool spec must be an object")
    name = obj.get("name")
    if not isinstance(name, str) or not is_token(name):
        raise CallbackError(f"tool name must match [A-Za-z0-9_-]{{1,64}}: {name!r}")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise CallbackError("description must be a string")
    parameters = obj.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise CallbackError("parameters must be a JSON Schema of type object")
    url = obj.get("callback_url", obj.get("callbackUrl"))
    try:
        parse_url(url, field="callback_url")
    except OutboundError as exc:
        raise CallbackError(str(exc)) from None
    timeout_ms = obj.get("timeout_ms", obj.get("timeoutMs"))
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float) or timeout_ms <= 0
    ):
        raise CallbackError("timeout_ms must be a positive number")
    timeout_s = None if timeout_ms is None else timeout_ms / 1000
    return CallbackSpec(name, description, parameters, str(url), timeout_s)


class CallbackTool:
    """A tool whose calls are POSTed to its callback URL, signed with the tenant's secret.

    A tenant without a secret still gets its calls, without the signature header.
    """

    def __init__(self, spec: CallbackSpec) -> None:
        self._callback = spec
        self._spec = spec.tool_spec

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """POST the call and read `{result}` or `{error}`; every failure is an error result."""
        name = self._spec.name
        timeout = self._spec.timeout_s or ctx.settings.tool_timeout_s
        body = orjson.dumps(
            {"sessionId": ctx.session_id, "callId": ctx.call_id, "toolName": name, "args": args}
        )
        headers = {"Content-Type": "application/json", "User-Agent": "flotilla-callback/1"}
        secret = tenant_secret(ctx.settings.tenant_secrets, ctx.tenant)
        if secret:
            headers[SIGNATURE_HEADER] = sign_body(secret, body)
        try:
            async with asyncio.timeout(timeout):
                url = self._callback.callback_url
                address = await check_url(url, ctx.settings.callback_allow)
                status, content = await post_pinned(
                    url, address, body, headers, timeout=timeout, max_reply_bytes=MAX_REPLY_BYTES
                )
        except OutboundError as exc:
            return ToolResult.error(f"callback of tool {name!r} refused: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return ToolResult.error(f"callback of tool {name!r} timed out after {timeout:g} s")
        except httpx.HTTPError as exc:
            return ToolResult.error(f"callback of tool {name!r} failed: {type(exc).__name__}")
        return _interpret(name, status, content)


def _interpret(name: str, status: int, content: bytes) -> ToolResult:
    if 300 <= status < 400:
        return ToolResult.error(
            f"callback of tool {name!r} answered HTTP {status}; redirects are not followed"
        )
    if not 200 <= status < 300:
        excerpt = content[:_ERROR_EXCERPT_CHARS].decode("utf-8", "replace")
        return ToolResult.error(f"callback of tool {name!r} answered HTTP {status}: {excerpt}")
    return reply_result(content) or ToolResult.error(
        f"callback of tool {name!r} did not answer {{result}} or {{error}}"
    )
