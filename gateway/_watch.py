"""A durable pull consumer of fleet events shared by every gateway replica.

All replicas bind the same durable name, so each event is handled by one of them, at least
once: an event whose handler fails, or whose replica dies before acking, is delivered again
(to any replica), so handlers must tolerate a repeat.

Pull requests are kept topped up, as workers/_intake.py does, rather than made with nats-py's
`fetch(n)`: a waiting `fetch(n)` holds the first events of a trickle until n have arrived or
the request expires, which would delay a lone `agent_end` by seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError
from prometheus_client import Counter
from pydantic import ValidationError

from schemas import Event

__all__ = ["watch_events"]

log = logging.getLogger(__name__)

ACK_WAIT_S = 30.0
"""Handlers run one after another; up to `batch` delivered events wait their turn within this."""
MAX_DELIVER = 10
"""With the retry delays below, a handler may fail for about 90 s (say, Redis down) before
its event is given up."""
RETRY_BASE_S = 0.25
RETRY_MAX_S = 30.0
PULL_EXPIRES_S = 10.0
IDLE_HEARTBEAT_S = 0.5
"""The server sends one while a pull request waits; three missed mean the request was lost
(a reconnect), and another is sent."""
ERROR_BACKOFF_S = 1.0

WATCHED_EVENTS = Counter(
    "flotilla_gateway_watched_events_total",
    "Events taken from a shared event consumer, by consumer and outcome "
    "(handled; retried: the handler failed; dropped: it failed on the last delivery; "
    "invalid: not an event)",
    ["consumer", "outcome"],
)
WATCH_ERRORS = Counter(
    "flotilla_gateway_watch_errors_total",
    "Failed pulls or consumer creations of a shared event consumer (NATS unreachable, "
    "consumer deleted, leader change), each followed by a retry",
    ["consumer"],
)


async def watch_events(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subjects: list[str],
    handler: Callable[[Event], Awaitable[None]],
    stop: asyncio.Event,
    batch: int = 100,
) -> None:
    """Hand every new event on `filter_subjects` to `handler` on one replica, until `stop`.

    The consumer is created (or its filters updated) on start and again after any failed
    pull, so a consumer deleted by an operator comes back; it starts at events published
    after its creation. A closed NATS connection or a consumer configuration the server
    refuses ends the watch (it raises); every other NATS failure is retried.
    """
    config = ConsumerConfig(
        durable_name=durable,
        filter_subjects=filter_subjects,
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=MAX_DELIVER,
    )
    # nats-py has no public accessor for the connection of a JetStream context
    feed = _Feed(js._nc, stream=stream, durable=durable, batch=batch)
    await feed.open()
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    stopped.add_done_callback(lambda _: feed.wake())
    consumer_ready = False
    try:
        while not stop.is_set():
            try:
                if not consumer_ready:
                    await js.add_consumer(stream, config)
                    consumer_ready = True
                msg = await feed.next()
                if msg is not None:
                    await _settle(msg, handler, durable)
            except (nats.errors.ConnectionClosedError, BadRequestError):
                raise  # no retry can fix these
            except nats.errors.Error as exc:
                consumer_ready = False
                WATCH_ERRORS.labels(durable).inc()
                log.warning(
                    "event consumer %s: %r; retrying in %.1f s", durable, exc, ERROR_BACKOFF_S
                )
                await asyncio.wait({stopped}, timeout=ERROR_BACKOFF_S)
    finally:
        stopped.cancel()
        await feed.close()


class _PullFailed(nats.errors.Error):
    """The server ended a pull request with an error status (consumer deleted, leader change)."""


class _Feed:
    """Pull requests for up to `batch` messages kept open on one consumer.

    The server delivers into `_ready` as events arrive; a None there only wakes the reader.
    """

    def __init__(self, nc: NATS, *, stream: str, durable: str, batch: int) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._sub: Subscription | None = None
        self._ready: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._outstanding = 0
        self._last_seen = time.monotonic()
        self._failure: str | None = None

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    def wake(self) -> None:
        self._ready.put_nowait(None)

    async def next(self) -> Msg | None:
        """The next message, after asking for more when half the batch is used up.

        None when woken or when nothing came within IDLE_HEARTBEAT_S; raises _PullFailed
        when the server refused the last pull request.
        """
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise _PullFailed(failure)
        if self._outstanding and time.monotonic() - self._last_seen > 3 * IDLE_HEARTBEAT_S:
            self._outstanding = 0
        held = self._outstanding + self._ready.qsize()
        if held <= self._batch // 2:
            request = {
                "batch": self._batch - held,
                "expires": int(PULL_EXPIRES_S * 1e9),
                "idle_heartbeat": int(IDLE_HEARTBEAT_S * 1e9),
            }
            await self._nc.publish(self._next_subject, orjson.dumps(request), reply=self._inbox)
            self._outstanding += self._batch - held
            self._last_seen = time.monotonic()
        try:
            async with asyncio.timeout(IDLE_HEARTBEAT_S):
                return await self._ready.get()
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Stop receiving; events delivered but not handled go back to the consumer at once."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
        while not self._ready.empty():
            msg = self._ready.get_nowait()
            if msg is not None:
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak()

    async def _on_message(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers or {}
        if msg.reply or "Status" not in headers:
            self._outstanding = max(self._outstanding - 1, 0)
            self._ready.put_nowait(msg)
            return
        status = headers["Status"]
        if status == "100":
            return  # idle heartbeat: the pull request is alive
        if status in ("404", "408"):
            # The request ended; the header says how many of its messages never came.
            pending = headers.get("Nats-Pending-Messages")
            self._outstanding -= (
                min(int(pending), self._outstanding) if pending else self._outstanding
            )
        else:  # 409 consumer deleted or leadership change, 503 no responders...
            self._outstanding = 0
            self._failure = f"pull request refused: {status} {headers.get('Description', '')}"
        self.wake()


async def _settle(msg: Msg, handler: Callable[[Event], Awaitable[None]], consumer: str) -> None:
    """Run the handler on one message; ack on success, nak with a growing delay on failure."""
    meta = msg.metadata
    try:
        event = Event.model_validate_json(msg.data).model_copy(update={"seq": meta.sequence.stream})
    except ValidationError:
        log.exception(
            "event consumer %s: stream sequence %d is not an event", consumer, meta.sequence.stream
        )
        WATCHED_EVENTS.labels(consumer, "invalid").inc()
        await msg.term()
        return
    try:
        await handler(event)
    except asyncio.CancelledError:
        await msg.nak()  # shutting down: let another replica have it now, not after ack_wait
        raise
    except Exception:
        if meta.num_delivered >= MAX_DELIVER:
            log.exception(
                "event consumer %s: %s seq %d failed %d times; dropped",
                consumer,
                event.type,
                event.seq,
                meta.num_delivered,
            )
            WATCHED_EVENTS.labels(consumer, "dropped").inc()
            await msg.term()
        else:
            log.warning(
                "event consumer %s: %s seq %d failed; retrying",
                consumer,
                event.type,
                event.seq,
                exc_info=True,
            )
            WATCHED_EVENTS.labels(consumer, "retried").inc()
            await msg.nak(delay=min(RETRY_BASE_S * 2 ** (meta.num_delivered - 1), RETRY_MAX_S))
        return
    await msg.ack()
    WATCHED_EVENTS.labels(consumer, "handled").inc()
