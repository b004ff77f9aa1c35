"""An ASGI app served by uvicorn on 127.0.0.1 inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test runner owns SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LoopbackServer:
    """`await start()` returns once the app accepts connections; `port` is then set."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.app = app
        self._config = {"lifespan": "off", "ws": "none", **config}
        self.port = 0
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket, self.port = sock, sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, **self._config)
        server = self._server = _Server(config)
        task = self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # uvicorn offers a flag, not an event
            if task.done():
                await task  # raises the startup failure
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._socket is not None:
            self._socket.close()
