"""HTTP callback tools (PROTOCOL §8): a call is a signed POST to a URL the session was given.

CallbackError (ValueError)   an invalid callback tool spec; `code` = "invalid_tool"
└── CallbackRefused          a URL pointing where the fleet must not go; `code` = "callback_refused"

Addresses are checked when the tool is attached and again at every call, and the request
goes to the very address that was checked (no second DNS lookup that could be rebound).
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNATURE_HEADER = "X-Flotilla-Signature"
MAX_URL_CHARS = 2048
MAX_REPLY_BYTES = 1024 * 1024
_ERROR_EXCERPT_CHARS = 200
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
     "instance-data.ec2.internal"}
)  # fmt: skip
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class CallbackError(ValueError):
    """An invalid callback tool spec (bad name, parameters or URL)."""

    code = "invalid_tool"


class CallbackRefused(CallbackError):
    """A callback URL whose host is, or resolves to, an address the fleet must not call."""

    code = "callback_refused"


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
    _split_url(url)
    timeout_ms = obj.get("timeout_ms", obj.get("timeoutMs"))
    if timeout_ms is not None and (
        isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float) or timeout_ms <= 0
    ):
        raise CallbackError("timeout_ms must be a positive number")
    timeout_s = None if timeout_ms is None else timeout_ms / 1000
    return CallbackSpec(name, description, parameters, str(url), timeout_s)


async def check_callback_url(url: str, allow: tuple[str, ...] = ()) -> IPAddress:
    """Refuse a URL the fleet must not call; returns the checked address to connect to.

    Loopback, private, shared, multicast, unspecified and other non-public addresses are
    refused unless `host:port` (or `address:port`) matches an `allow` fnmatch pattern;
    link-local and cloud-metadata addresses are refused whatever `allow` says. Every address
    the host name resolves to is checked. IPv6 patterns are written unbracketed (`::1:*`).
    """
    target = _split_url(url)
    host, port = target.host.lower().rstrip("."), _port(target)
    if host in _METADATA_HOSTS:
        raise CallbackRefused(f"{host} is a cloud metadata service")
    addresses = await _resolve(host, port)
    for address in addresses:
        _check_address(host, port, address, allow)
    return addresses[0]


def sign_body(secret: str, body: bytes) -> str:
    """The `X-Flotilla-Signature` value: `sha256=<hex HMAC-SHA256 of body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def tenant_secret(raw: str, tenant: str) -> str | None:
    """The HMAC secret of `tenant` from `tenant:secret,tenant2:secret2`, if it has one."""
    return _parse_secrets(raw).get(tenant)


@functools.lru_cache(maxsize=8)
def _parse_secrets(raw: str) -> Mapping[str, str]:
    # an entry without a tenant or a secret is ignored; its calls then go out unsigned
    secrets: dict[str, str] = {}
    for entry in raw.split(","):
        tenant, _, secret = entry.strip().partition(":")
        if tenant and secret:
            secrets[tenant] = secret
    return secrets


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
                address = await check_callback_url(
                    self._callback.callback_url, ctx.settings.callback_allow
                )
                status, content = await self._post(address, body, headers, timeout)
        except CallbackError as exc:
            return ToolResult.error(f"callback of tool {name!r} refused: {exc}")
        except (TimeoutError, httpx.TimeoutException):
            return ToolResult.error(f"callback of tool {name!r} timed out after {timeout:g} s")
        except httpx.HTTPError as exc:
            return ToolResult.error(f"callback of tool {name!r} failed: {type(exc).__name__}")
        return _interpret(name, status, content)

    async def _post(
        self, address: IPAddress, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes]:
        target = httpx.URL(self._callback.callback_url)
        # connect to the checked address; Host and TLS name stay those of the URL. A fresh
        # client per call: a pooled TLS connection must never serve another host name.
        pinned = target.copy_with(host=str(address))
        headers = {**headers, "Host": target.netloc.decode("ascii")}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        async with (
            httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout)
            ) as client,
            client.stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_REPLY_BYTES:
                    return response.status_code, b"<reply too large>"
            return response.status_code, bytes(content)


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


def _split_url(url: object) -> httpx.URL:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise CallbackError(f"callback_url must be an http(s) URL of at most {MAX_URL_CHARS} chars")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise CallbackError("callback_url must not contain whitespace or control characters")
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CallbackError(f"callback_url is not a valid URL: {exc}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise CallbackError("callback_url must be an http:// or https:// URL with a host")
    if target.port is not None and not 0 < target.port < 65536:
        raise CallbackError("callback_url has an invalid port")
    if target.userinfo:
        raise CallbackError("callback_url must not carry credentials (calls are signed)")
    return target


def _port(target: httpx.URL) -> int:
    return target.port or (443 if target.scheme == "https" else 80)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise CallbackRefused(f"{host} resolves to no address")
    return list(dict.fromkeys(addresses))


def _check_address(host: str, port: int, address: IPAddress, allow: tuple[str, ...]) -> None:
    candidates = {address, *_embedded_ipv4(address)}
    if any(c in _METADATA_ADDRESSES or c.is_link_local for c in candidates):
        raise CallbackRefused(f"{host} is, or resolves to, a link-local or metadata address")
    if all(c.is_global and not c.is_multicast for c in candidates):
        return
    names = (f"{host}:{port}", f"{address}:{port}")  # IPv6 unbracketed: `[` is fnmatch syntax
    if any(fnmatch.fnmatchcase(n, p.lower()) for n in names for p in allow):
        return
    raise CallbackRefused(
        f"{host}:{port} resolves to {address}, a non-public address; "
        "list it in callback_allow to permit it"
    )


def _embedded_ipv4(address: IPAddress) -> list[IPAddress]:
    """IPv4 addresses an IPv6 address reaches (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[IPAddress] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.append(address.teredo[1])
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found
