"""Publishing events: envelope built once, encoded with orjson, sent as core NATS publishes.

FLOTILLA_EVT captures the subjects, which gives replay; core publishes are buffered by the
client and flushed in batches, so an event costs no round trip.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from schemas import EVENT_CATALOG, Subjects, Webhook
from workers import _metrics
from workers._webhooks import WebhookJobs

_PUBLISHED = {c: _metrics.EVENTS_PUBLISHED.labels(c) for c in ("progress", "control", "monitor")}


def now_ms() -> int:
    return int(time.time() * 1000)


class EventPublisher:
    """Sends events of any session; the worker id is stamped on every envelope."""

    def __init__(self, nc: NATS, *, subjects: Subjects, worker_id: str) -> None:
        self._nc = nc
        self._subjects = subjects
        self.worker_id = worker_id
        self._webhooks = WebhookJobs(nc.jetstream(), subjects=subjects)

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
        """Publish one event; `msg_id` lets FLOTILLA_EVT drop a re-publication of it.

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
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        encoded = orjson.dumps(envelope)
        if webhook is not None and type_ in webhook.events:
            await self._webhooks.publish(webhook, envelope, encoded, msg_id)
        await self._nc.publish(subject, encoded, headers=headers)
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
