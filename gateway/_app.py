"""The gateway application: a stateless FastAPI service over the fleet (PROTOCOL §8)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flotilla.settings import GatewaySettings, Settings
from gateway import _metrics, _providers, _sessions, _streams
from gateway._dependencies import Caller
from gateway._errors import documented, error_response, install_error_handlers
from gateway._resources import Gateway, gateway_of
from schemas import HealthMeter, HealthSessions, HealthView, UsageView

__all__ = ["VERSION", "create_app"]

VERSION = importlib.metadata.version("flotilla")


class Guard:
    """Pure ASGI middleware: refuses bodies over the limit (413) before a route reads them,
    and records every request's route template, status and latency."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.max_body_bytes
        received = 0
        too_large = refused = False

        async def refuse() -> None:
            nonlocal refused
            if not refused:
                refused = True
                response = error_response(
                    413, "payload_too_large", f"the body is over {limit} bytes"
                )
                await response(scope, receive, send)
                self._observe(scope, 413, started)

        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await refuse()
            return

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def observed_send(message: Message) -> None:
            if too_large:  # the app answered its failed read (FastAPI: a 400); it is a 413
                await refuse()
                return
            if message["type"] == "http.response.start":
                self._observe(scope, message["status"], started)
            await send(message)

        try:
            await self.app(scope, limited_receive, observed_send)
        except _TooLarge:
            await refuse()

    @staticmethod
    def _observe(scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        _metrics.REQUESTS.labels(template, method, str(status)).inc()
        _metrics.LATENCY.labels(template, method).observe(time.perf_counter() - started)


class _TooLarge(Exception):
    pass


def create_app(
    settings: Settings | None = None,
    config: GatewaySettings | None = None,
    *,
    gateway_factory: Callable[[Settings, GatewaySettings], Awaitable[Gateway]] | None = None,
) -> FastAPI:
    """The gateway app; it connects to the fleet when it starts (ASGI lifespan)."""
    settings = settings or Settings.from_env()
    config = config or GatewaySettings.from_env()
    start = gateway_factory or Gateway.start

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = await start(settings, config)
        try:
            yield
        finally:
            await app.state.gateway.close()

    app = FastAPI(
        title="Flotilla gateway",
        version=VERSION,
        summary="cmdc_gateway's HTTP, SSE and WebSocket API over a Flotilla fleet",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.get(
        "/healthz",
        response_model=HealthView,
        tags=["operations"],
        responses={503: {"model": HealthView, "description": "NATS or Redis is down"}},
    )
    async def healthz(request: Request) -> Any:
        """200 when NATS and Redis answer, else 503 with `status: "degraded"`."""
        gateway = gateway_of(request)
        healthy = await gateway.healthy()
        active = tracked = 0
        if healthy:
            active = await gateway.directory.count()
            tracked = await gateway.meter.tracked_keys()
        view = HealthView(
            status="ok" if healthy else "degraded",
            version=VERSION,
            timestamp=datetime.now(UTC).isoformat(),
            sessions=HealthSessions(active=active),
            meter=HealthMeter(tracked_keys=tracked),
        )
        if not healthy:
            return Response(
                view.model_dump_json(by_alias=True),
                status_code=503,
                media_type="application/json",
            )
        return view

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/usage",
        response_model=UsageView,
        tags=["operations"],
        responses=documented(401, 429, 503),
    )
    async def usage(request: Request, caller: Caller) -> Any:
        """The meter of the calling key: requests, prompts, tokens and cost."""
        counts = await gateway_of(request).meter.usage(caller.key_id)
        return UsageView.model_validate(counts)

    app.include_router(_sessions.router)
    app.include_router(_streams.router)
    app.include_router(_providers.router)
    app.add_middleware(Guard, max_body_bytes=config.max_body_bytes)
    return app
