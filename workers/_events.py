"""Publishing events: envelope built once, encoded with orjson, captured by FLOTILLA_EVT.

With replicated streams (`FLOTILLA_REPLICAS` > 1) every event is a JetStream publish with a
`Nats-Msg-Id`, its acknowledgement collected off the turn's path (`EventCapture`). One the
stream did not acknowledge within a second (a stream leader election, a lost node) is
published again with the same id until acknowledged, the oldest first: the replay log has no
gap and the stream drops the copies (an event published again can land after later ones).
Live subscribers get the message itself (a core subscription on the subject), so a copy
reaches them too, with the same `Nats-Msg-Id` (the SDK shows it once). On one server (R1)
events are plain publishes: no leader moves, and nats-py buffers them while it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from schemas import EVENT_CATALOG, Subjects, Webhook
from workers import _metrics
from workers._webhooks import WebhookJobs

log = logging.getLogger(__name__)

_PUBLISHED = {c: _metrics.EVENTS_PUBLISHED.labels(c) for c in ("progress", "control", "monitor")}

RETRY_AFTER_S = 1.0
"""An event not acknowledged this long after its publication is published again."""
GIVE_UP_S = 60.0
"""After this long unacknowledged, an event is counted lost (NATS out for a minute: the
session's turn goes on, its subscribers saw the event live, the replay log misses it)."""
MAX_PENDING = 65_536
"""Unacknowledged events at most; past it a publication waits (backpressure on the turns)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True, eq=False)
class _Pending:
    subject: str
    data: bytes
    headers: dict[str, str]
    sent: float
    first: float
    failed: bool = False


class EventCapture:
    """JetStream publishes whose acknowledgements are collected in the background.

    Each event is published with a reply subject of this capture's own inbox (one
    subscription for all of them), so a turn pays one `publish` per event and an
    acknowledgement costs a dictionary lookup: no future, no JSON decoding.
    """

    def __init__(self, nc: NATS, *, id_prefix: str, acknowledged: bool = True) -> None:
        self._nc = nc
        self._id_prefix = id_prefix
        self._acknowledged = acknowledged
        self._tokens = itertools.count(1)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._pending: dict[str, _Pending] = {}  # by reply token, in publication order
        self._room = asyncio.Semaphore(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def start(self) -> None:
        if not self._acknowledged:
            return
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._task = asyncio.create_task(self._watch(), name="event-capture")

    async def close(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` for the pending acknowledgements, then stop watching."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending:
                    self._wake.set()
                    await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def publish(self, subject: str, data: bytes, msg_id: str | None) -> None:
        """Send one event; returns once it is handed to the connection (not once stored)."""
        if not self._acknowledged:  # one node: no election to outlive, no copy to drop
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            await self._nc.publish(subject, data, headers=headers)
            return
        await self._room.acquire()
        token = str(next(self._tokens))
        headers = {"Nats-Msg-Id": msg_id or f"{self._id_prefix}.{token}"}
        now = time.monotonic()
        pending = self._pending[token] = _Pending(subject, data, headers, now, now)
        try:
            await self._nc.publish(subject, data, reply=f"{self._inbox}.{token}", headers=headers)
        except Exception:  # NATS is out: the watcher publishes it again
            pending.failed = True

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox) + 1 :]
        pending = self._pending.get(token)
        if pending is None:
            return  # a late answer to a copy of one already acknowledged
        if (msg.headers and msg.headers.get("Status") == "503") or b'"error"' in msg.data:
            # no stream leader (an election), or refused: sent again at the watcher's next
            # round (not at once: during an election every answer is this one)
            pending.failed = True
            return
        del self._pending[token]
        self._room.release()

    async def _watch(self) -> None:
        """Every half second (or when `close()` hurries it), a round of `_retry`."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY_AFTER_S / 2):
                    await self._wake.wait()
            self._wake.clear()
            await self._retry(time.monotonic())
            _metrics.EVENTS_PENDING.set(len(self._pending))

    async def _retry(self, now: float) -> None:
        """Publish again what failed or is overdue, oldest first; drop what is hopeless."""
        for token, pending in list(self._pending.items()):
            if not pending.failed and now - pending.sent < RETRY_AFTER_S:
                continue
            if now - pending.first > GIVE_UP_S:
                log.warning(
                    "event %s on %s never stored: given up",
                    pending.headers["Nats-Msg-Id"],
                    pending.subject,
                )
                _metrics.EVENTS_UNCAPTURED.inc()
                if self._pending.pop(token, None) is not None:
                    self._room.release()
                continue
            _metrics.EVENT_REPUBLISHED.inc()
            pending.sent, pending.failed = now, False
            try:
                await self._nc.publish(
                    pending.subject,
                    pending.data,
                    reply=f"{self._inbox}.{token}",
                    headers=pending.headers,
                )
            except Exception:  # NATS itself is out: the next round tries again
                pending.failed = True


class EventPublisher:
    """Sends events of any session; the worker id is stamped on every envelope."""

    def __init__(
        self, nc: NATS, *, subjects: Subjects, worker_id: str, acknowledged: bool = True
    ) -> None:
        """`acknowledged`: capture with acknowledgements (replicated streams, whose leader
        can move); else plain publishes, which a single JetStream server captures as long as
        it runs (and nats-py buffers them while it reconnects)."""
        self._nc = nc
        self._subjects = subjects
        self.worker_id = worker_id
        self._webhooks = WebhookJobs(nc.jetstream(), subjects=subjects)
        # ids unique across restarts of a worker id: a new process never reuses an old one
        self.capture = EventCapture(
            nc, id_prefix=f"{worker_id}.{secrets.token_hex(4)}", acknowledged=acknowledged
        )

    async def publish(
        self,
        *,
        tenant: str,
        group: str | None,
        sid: str,
        type_: str,
        data: dict[str, Any],
        turn: int = 0,
        request_id: str | None = None,
        meta: dict[str, Any] | None = None,
        msg_id: str | None = None,
        webhook: Webhook | None = None,
    ) -> None:
        """Publish one event; `msg_id` (else a fresh one) lets FLOTILLA_EVT drop a copy of it.

        With a `webhook` listing the event's type, its job is stored first (workers/_webhooks).
        """
        channel = EVENT_CATALOG[type_].channel
        envelope: dict[str, Any] = {
            "type": type_,
            "sid": sid,
            "tenant": tenant,
            "group": group,
            "ts": now_ms(),
            "turn": turn,
            "request_id": request_id,
            "worker": self.worker_id,
            "data": data,
        }
        if meta:
            envelope["meta"] = meta
        subject = self._subjects.evt(tenant, group, sid, channel, type_)
        encoded = orjson.dumps(envelope)
        if webhook is not None and type_ in webhook.events:
            await self._webhooks.publish(webhook, envelope, encoded, msg_id)
        await self.capture.publish(subject, encoded, msg_id)
        _PUBLISHED[channel].inc()

    async def last_stored(
        self, *, tenant: str, group: str | None, sid: str, type_: str
    ) -> dict[str, Any] | None:
        """The last event of `type_` of a session that FLOTILLA_EVT holds, if any."""
        subject = self._subjects.evt(tenant, group, sid, EVENT_CATALOG[type_].channel, type_)
        try:
            msg = await self._nc.jetstream().get_last_msg(self._subjects.evt_stream, subject)
        except NotFoundError:
            return None
        value = orjson.loads(msg.data or b"{}")
        return value if isinstance(value, dict) else None
