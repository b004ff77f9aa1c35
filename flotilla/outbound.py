"""Outbound HTTP of the fleet (callback tools, session webhooks): which URLs it may call, how
a body is signed, and a POST that goes to the very address that was checked.

OutboundError (ValueError)   a URL the fleet cannot use (malformed); `code` = "invalid_url"
└── OutboundRefused          a URL pointing where the fleet must not go; `code` = "callback_refused"
    └── UnresolvedHost       its host name does not resolve (now); worth retrying later

The address a host name resolves to is checked, then connected to directly: no second DNS
lookup that could be rebound between the check and the request.
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

import httpx

__all__ = [
    "MAX_URL_CHARS",
    "SIGNATURE_HEADER",
    "IPAddress",
    "OutboundError",
    "OutboundRefused",
    "UnresolvedHost",
    "check_url",
    "parse_url",
    "post_pinned",
    "sign_body",
    "tenant_secret",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SIGNATURE_HEADER = "X-Flotilla-Signature"
MAX_URL_CHARS = 2048
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data",
     "instance-data.ec2.internal"}
)  # fmt: skip
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class OutboundError(ValueError):
    """A URL the fleet cannot call: not http(s), no host, credentials, control characters."""

    code = "invalid_url"


class OutboundRefused(OutboundError):
    """A URL whose host is, or resolves to, an address the fleet must not call."""

    code = "callback_refused"


class UnresolvedHost(OutboundRefused):
    """A host name that resolves to nothing now; a later attempt may succeed."""


def parse_url(url: object, *, field: str = "url") -> httpx.URL:
    """The URL if it is a plain http(s) URL with a host (raises OutboundError)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise OutboundError(f"{field} must be an http(s) URL of at most {MAX_URL_CHARS} chars")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise OutboundError(f"{field} must not contain whitespace or control characters")
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise OutboundError(f"{field} is not a valid URL: {exc}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise OutboundError(f"{field} must be an http:// or https:// URL with a host")
    if target.port is not None and not 0 < target.port < 65536:
        raise OutboundError(f"{field} has an invalid port")
    if target.userinfo:
        raise OutboundError(f"{field} must not carry credentials (calls are signed)")
    return target


async def check_url(url: str, allow: tuple[str, ...] = ()) -> IPAddress:
    """Refuse a URL the fleet must not call; returns the checked address to connect to.

    Loopback, private, shared, multicast, unspecified and other non-public addresses are
    refused unless `host:port` (or `address:port`) matches an `allow` fnmatch pattern;
    link-local and cloud-metadata addresses are refused whatever `allow` says. Every address
    the host name resolves to is checked. IPv6 patterns are written unbracketed (`::1:*`).
    """
    target = parse_url(url)
    host, port = target.host.lower().rstrip("."), _port(target)
    if host in _METADATA_HOSTS:
        raise OutboundRefused(f"{host} is a cloud metadata service")
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


async def post_pinned(
    url: str,
    address: IPAddress,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_reply_bytes: int,
) -> tuple[int, bytes]:
    """POST `body` to `url` at the checked `address`; (status, reply cut at the limit).

    Redirects are not followed. httpx errors (connect, timeout...) propagate.
    """
    target = httpx.URL(url)
    # connect to the checked address; Host and TLS name stay those of the URL. A fresh
    # client per call: a pooled TLS connection must never serve another host name.
    pinned = target.copy_with(host=str(address))
    sent = {**headers, "Host": target.netloc.decode("ascii")}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    async with (
        httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout)
        ) as client,
        client.stream("POST", pinned, content=body, headers=sent, extensions=extensions) as reply,
    ):
        content = bytearray()
        async for chunk in reply.aiter_bytes():
            content += chunk
            if len(content) > max_reply_bytes:
                return reply.status_code, b"<reply too large>"
        return reply.status_code, bytes(content)


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
        raise UnresolvedHost(f"cannot resolve {host}: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise UnresolvedHost(f"{host} resolves to no address")
    return list(dict.fromkeys(addresses))


def _check_address(host: str, port: int, address: IPAddress, allow: tuple[str, ...]) -> None:
    candidates = {address, *_embedded_ipv4(address)}
    if any(c in _METADATA_ADDRESSES or c.is_link_local for c in candidates):
        raise OutboundRefused(f"{host} is, or resolves to, a link-local or metadata address")
    if all(c.is_global and not c.is_multicast for c in candidates):
        return
    names = (f"{host}:{port}", f"{address}:{port}")  # IPv6 unbracketed: `[` is fnmatch syntax
    if any(fnmatch.fnmatchcase(n, p.lower()) for n in names for p in allow):
        return
    raise OutboundRefused(
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
