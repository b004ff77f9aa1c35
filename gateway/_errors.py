"""The gateway's errors: `{"error": <code>, "message": <text>}` with PROTOCOL §8's statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from flotilla.runtime import REDIS_UNREACHABLE
from schemas import ErrorBody, describe_errors

__all__ = [
    "UNREACHABLE",
    "ApiError",
    "describe",
    "documented",
    "error_response",
    "install_error_handlers",
    "not_found",
    "unavailable",
]

_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "already_exists",
    413: "payload_too_large",
    422: "invalid_request",
    429: "rate_limited",
    503: "unavailable",
}


_MEANINGS = {
    400: "The body is not JSON, or not a JSON object",
    401: "No API key, or one the gateway does not know",
    403: "The key may not do this (an admin route; a sub-agent's wait)",
    404: "No such session or group for the caller's tenant (another tenant's reads the same)",
    409: "The session id is taken",
    413: "The body is over GATEWAY_MAX_BODY_BYTES",
    422: "Valid JSON, invalid content: the message names the field and why",
    429: "Rate limited: retry after the `Retry-After` seconds",
    503: "NATS or Redis did not answer",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the `{error, message}` body."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


UNREACHABLE = REDIS_UNREACHABLE
"""Redis failures that mean "unreachable" (503), unlike a refused command (a bug: 500)."""


def unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"Redis did not answer: {type(exc).__name__}")


def not_found(sid: str) -> ApiError:
    """The one answer for a session that does not exist and for another tenant's."""
    return ApiError(404, f"no session {sid!r}")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message}, status_code=status, headers=dict(headers or {})
    )


def describe(errors: list[Any]) -> str:
    """What is wrong with a body: `field: message; ...`, worded as the workers word it."""
    return describe_errors(errors)


def _allowed_methods(app: Any, request: Request) -> list[str]:
    """Every method some route of the app serves at the request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: Any) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        # not JSON, or JSON that is not an object: the body as a whole is wrong (400);
        # an object whose content is wrong is 422
        if any(
            e.get("type") == "json_invalid" or tuple(e.get("loc", ())) == ("body",) for e in errors
        ):
            return error_response(400, "invalid_json", "the body must be a JSON object")
        return error_response(422, "invalid_request", describe(errors))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _CODES.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return error_response(exc.status_code, code, str(exc.detail), headers)

    async def redis_unreachable(request: Request, exc: Exception) -> JSONResponse:
        return await api_error(request, unavailable(exc))

    app.add_exception_handler(ApiError, api_error)
    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, redis_unreachable)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
