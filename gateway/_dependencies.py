"""The dependencies every route uses: who calls (the API key), and whether its rate admits
the request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from gateway import _metrics
from gateway._auth import Principal
from gateway._errors import ApiError
from gateway._resources import Gateway, gateway_of

__all__ = ["Admin", "Caller", "admit", "presented_key"]


def presented_key(headers: Headers) -> str | None:
    """The key of `X-API-Key`, else of `Authorization: Bearer`."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def authenticate(request: Request) -> Principal:
    """The caller's principal, after the shared rate limit admitted the request."""
    gateway = gateway_of(request)
    principal = gateway.keys.authenticate(presented_key(request.headers))
    if principal is None:
        _metrics.AUTH_FAILURES.inc()
        raise ApiError(401, "a valid API key is required (X-API-Key or Authorization: Bearer)")
    await admit(gateway, principal)
    return principal


async def admit(gateway: Gateway, principal: Principal) -> None:
    """Take a token from the key's bucket, shared by every replica, and count the request in
    its meter; 429 with `Retry-After` when the bucket is empty. HTTP requests, WebSocket
    connects and WebSocket actions each take one."""
    retry_after = await gateway.limiter.admit(principal.key_id)
    if retry_after is not None:
        raise ApiError(
            429,
            f"rate limit of {gateway.config.rate_limit_rpm} requests per minute reached",
            headers={"Retry-After": str(max(1, int(retry_after + 0.999)))},
        )


async def authenticate_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.admin:
        raise ApiError(403, "an admin key is required")
    return principal


Caller = Annotated[Principal, Depends(authenticate)]
Admin = Annotated[Principal, Depends(authenticate_admin)]
