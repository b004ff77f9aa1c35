"""Running a long-lived service in the foreground: uvloop, logging, signals.

The first SIGTERM or SIGINT starts the service's graceful shutdown; a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol


class Service(Protocol):
    async def run(self) -> None: ...
    async def shutdown(self) -> None: ...


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_service(make: Callable[[], Service]) -> None:
    """Run the service made by `make` on uvloop (when available) until it stops."""

    async def main() -> None:
        service = make()
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                os._exit(130)
            loop.create_task(service.shutdown())  # noqa: RUF006 - runs until the loop ends

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await service.run()

    run_async(main())


def run_async(coro: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]
