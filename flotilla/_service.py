"""Running a long-lived service in the foreground: uvloop, logging, signals.

The first SIGTERM or SIGINT starts the service's graceful shutdown; a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from flotilla._connect import REDIS_ERRORS
from flotilla.errors import UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTUP_PATIENCE_S = 120.0
"""How long a component starting waits for NATS and Redis before it gives up."""


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
        try:
            await service.run()
        except UnavailableError as exc:  # an outage that outlasted the start-up's patience
            log.error("%s", exc)  # noqa: TRY400 - an outage, not a bug: no traceback
            raise SystemExit(1) from None

    run_async(main())


def run_async(coro: Awaitable[None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


def _an_outage(exc: BaseException) -> bool:
    """NATS or Redis not answering now (a failover, an election, a restart), as opposed to
    an answer that says no (a JetStream API error other than 503)."""
    if isinstance(exc, nats.js.errors.APIError):
        return isinstance(exc, nats.js.errors.ServiceUnavailableError)
    return isinstance(exc, (nats.errors.Error, *REDIS_ERRORS, OSError, TimeoutError))


async def patiently(
    step: Callable[[], Awaitable[T]], what: str, *, patience: float = STARTUP_PATIENCE_S
) -> T:
    """Run a start-up `step` until NATS or Redis answers it. A component started during a
    failover or a leader election waits, with a log line per try, instead of dying with a
    traceback; past `patience` seconds, UnavailableError says what did not answer."""
    deadline = time.monotonic() + patience
    pause = 0.2
    while True:
        try:
            return await step()
        except Exception as exc:
            if not _an_outage(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise UnavailableError(
                    f"{what} did not answer within {patience:g} s: {type(exc).__name__}: {exc}"
                ) from exc
            log.warning("%s: %s: %s; trying again", what, type(exc).__name__, exc)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


WATCH_RETRY_S = 0.5
"""The pause before a KV watch that failed or ended is made again."""


async def watch_kv(
    kv: KeyValue,
    handle: Callable[[KeyValue.Entry], None],
    *,
    stopping: asyncio.Event,
    what: str,
    restarted: Callable[[], None] = lambda: None,
) -> None:
    """Feed every entry of `kv` (each key's latest value, then updates) to `handle` until
    `stopping`.

    A watch that cannot be made (JetStream busy or electing a leader) or that ends is made
    again after a pause, replaying the bucket: a component whose watch died would otherwise
    stop following the fleet, or stop altogether. An entry `handle` cannot take is logged
    and skipped, never a reason to watch again."""
    while not stopping.is_set():
        try:
            watcher = await kv.watchall()
            try:
                async for entry in watcher:
                    if entry is None:
                        continue
                    try:
                        handle(entry)
                    except Exception:
                        log.exception("%s: entry %r skipped", what, entry.key)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.warning("%s: watch failed (%r); watching again", what, exc)
        restarted()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WATCH_RETRY_S):
                await stopping.wait()
