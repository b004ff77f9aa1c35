"""`flotilla gateway`: the app served by uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import logging

import uvicorn

from flotilla.settings import GatewaySettings, Settings
from gateway._app import create_app


class _DenialNoise(logging.Filter):
    """uvicorn's websockets-sansio protocol (its default) logs "ASGI callable returned without
    completing handshake" at ERROR after every WebSocket refused with an HTTP denial response
    (Kludex/uvicorn PR #3138, open): a 401 or 429 is not a server error. The gateway's socket
    route always accepts or denies, so the message carries nothing else here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def serve(settings: Settings, config: GatewaySettings) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn closes streams and runs the app's shutdown."""
    app = create_app(settings, config)
    logging.getLogger("uvicorn.error").addFilter(_DenialNoise())
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_config=None,  # the process's logging (configure_logging) applies
        access_log=False,  # /metrics counts requests; per-request lines would be the bottleneck
        timeout_graceful_shutdown=5,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
    )
