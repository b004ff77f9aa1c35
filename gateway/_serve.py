"""`flotilla gateway`: the app served by uvicorn (uvloop and httptools when installed)."""

from __future__ import annotations

import uvicorn

from flotilla.settings import GatewaySettings, Settings
from gateway._app import create_app


def serve(settings: Settings, config: GatewaySettings) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn closes streams and runs the app's shutdown."""
    app = create_app(settings, config)
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
