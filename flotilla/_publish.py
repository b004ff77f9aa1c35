"""JetStream publishes that outlast a stream leader election.

A publish to a stream whose leader is being elected (a NATS node lost, a new R3 stream) gets
no answer for a few seconds — about 4 to 5 s measured here. The publish is retried with the
same `Nats-Msg-Id` until the stream stores it or the time is up: the stream's duplicate
window makes a retry of a publish that did land a no-op, so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import time

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

__all__ = ["RETRY_FOR_S", "publish_retrying"]

RETRY_FOR_S = 15.0
TRY_TIMEOUT_S = 1.0
"""How long one try waits for the acknowledgement: a try sent to a leader that just died
is given up soon, so the publish lands within about a second of the new leader's election
(a stored command is acknowledged in milliseconds otherwise)."""
"""Longer than a leader election (4 to 5 s here) with room for a slow cluster."""
_RETRIED = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    NoStreamResponseError,
    ServiceUnavailableError,
)


async def publish_retrying(
    js: JetStreamContext,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str],
    retry_for_s: float = RETRY_FOR_S,
) -> PubAck:
    """Publish and wait for the stream's acknowledgement, retrying with the same headers
    (`Nats-Msg-Id` included) while no stream answers; the last error after `retry_for_s`."""
    deadline = time.monotonic() + retry_for_s
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            return await js.publish(
                subject, data, headers=headers, timeout=max(0.5, min(TRY_TIMEOUT_S, left))
            )
        except _RETRIED:
            if time.monotonic() + delay >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
