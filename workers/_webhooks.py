"""Webhook jobs: for a session with a webhook, each event of a listed type is also put on
<PREFIX>_HOOK, a JetStream work queue the gateway replicas deliver from (gateway/_webhooks.py).

The job is published, and stored, before its event, with its delivery id as `Nats-Msg-Id`:
an event the next owner publishes again after a crash (a saved `agent_end`) gives the same
job, stored once within the stream's duplicate window. Deliveries are at-least-once;
receivers dedupe on `deliveryId`. A job carries no secret: the gateway signs at delivery.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import nats.errors
import orjson
from nats.js import JetStreamContext

from schemas import Subjects, Webhook
from workers import _metrics

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2.0
"""How long an event waits for the hook stream to store its job before going out without."""

_PUBLISHED = _metrics.WEBHOOK_JOBS.labels("published")
_FAILED = _metrics.WEBHOOK_JOBS.labels("failed")


def delivery_id(tenant: str, encoded_event: bytes, msg_id: str | None) -> str:
    """The id receivers dedupe on: from the event's message id when it has one (every
    publication of that event shares it), else from the event exactly as published."""
    basis = f"{tenant}\n{msg_id}".encode() if msg_id else encoded_event
    return hashlib.sha256(basis).hexdigest()[:32]


class WebhookJobs:
    """Publishes the webhook jobs of every session of one worker."""

    def __init__(self, js: JetStreamContext, *, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

    async def publish(
        self, webhook: Webhook, envelope: dict[str, Any], encoded: bytes, msg_id: str | None
    ) -> None:
        """Store the job `{url, delivery_id, event}`; a failure is logged and counted only,
        so that a webhook never stops the session's turn or its event."""
        tenant, sid = envelope["tenant"], envelope["sid"]
        job_id = delivery_id(tenant, encoded, msg_id)
        body = orjson.dumps({"url": webhook.url, "delivery_id": job_id, "event": envelope})
        try:
            await self._js.publish(
                self._subjects.hook(tenant, sid),
                body,
                timeout=PUBLISH_TIMEOUT_S,
                headers={"Nats-Msg-Id": job_id},
            )
        except (nats.errors.Error, TimeoutError) as exc:
            _FAILED.inc()
            log.warning("session %s: webhook job of %s not stored: %r", sid, envelope["type"], exc)
            return
        _PUBLISHED.inc()
