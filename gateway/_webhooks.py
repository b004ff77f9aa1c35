"""WebhookDeliverer: POSTs the webhook jobs workers put on <PREFIX>_HOOK (workers/_webhooks.py).

Every gateway replica pulls from one shared durable consumer. A job's URL is checked again
(flotilla.outbound), its event sent in camelCase and signed with the tenant's secret. A
failed attempt is nak'd with an exponential delay, so the retry schedule lives in JetStream
and survives a gateway restart; after `max_attempts` the job is dead-lettered
(`webhook_failed`), and a URL refused at delivery at once (`callback_refused`).
Deliveries are at-least-once: receivers dedupe on `deliveryId`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from flotilla.outbound import (
    SIGNATURE_HEADER,
    OutboundError,
    UnresolvedHost,
    check_url,
    post_pinned,
    sign_body,
    tenant_secret,
)
from flotilla.runtime import ensure_stream, hook_stream_config
from gateway._external import to_external
from schemas import Event, Subjects

__all__ = ["DELIVERIES", "DELIVERY_SECONDS", "WebhookDeliverer"]

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "flotilla_gateway_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (ok, retry, failed, refused)",
    ["outcome"],
)
DELIVERY_SECONDS = Histogram(
    "flotilla_gateway_webhook_seconds",
    "Duration of one webhook delivery attempt (URL check and POST)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
_OK, _RETRY, _FAILED, _REFUSED = (
    DELIVERIES.labels(o) for o in ("ok", "retry", "failed", "refused")
)

FAILED_CODE = "webhook_failed"
REFUSED_CODE = "callback_refused"
ATTEMPT_HEADER = "X-Flotilla-Delivery-Attempt"
USER_AGENT = "flotilla-webhook/1"
MAX_REPLY_BYTES = 4096
"""Only the status matters; a short excerpt of a failure goes into the dead letter."""
_EXCERPT_CHARS = 200
_ERROR_BACKOFF_S = 0.5


@dataclass(frozen=True, slots=True)
class _Job:
    """A webhook job as the worker published it: `{url, delivery_id, event}`."""

    url: str
    delivery_id: str
    event: Event


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    retryable: bool


class WebhookDeliverer:
    """Delivers webhook jobs until `run()`'s stop event is set; one per gateway replica."""

    def __init__(
        self,
        nc: NATS,
        *,
        subjects: Subjects,
        tenant_secrets: str,
        allow: tuple[str, ...],
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        max_attempts: int = 8,
        timeout_s: float = 10.0,
        durable: str | None = None,
        concurrency: int = 32,
        fetch_wait_s: float = 1.0,
        replicas: int = 1,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._subjects = subjects
        self._replicas = replicas
        self._secrets = tenant_secrets
        self._allow = allow
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._durable = durable or subjects.hook_consumer
        self._free = concurrency
        self._freed = asyncio.Event()
        self._fetch_wait_s = fetch_wait_s

    def backoff(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1`: base * 2^(attempt-1), capped."""
        return float(min(self._backoff_base_s * 2 ** (attempt - 1), self._backoff_cap_s))

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; deliveries under way are finished before returning.

        At most `concurrency` jobs are in hand at once: slots are counted before each fetch,
        and a fetch never asks for more than the free ones.
        """
        await ensure_stream(self._js, hook_stream_config(self._subjects, replicas=self._replicas))
        sub = await self._js.pull_subscribe(
            self._subjects.hook_all,
            durable=self._durable,
            stream=self._subjects.hook_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=max(30.0, 3 * self._timeout_s),
            ),
        )
        try:
            async with asyncio.TaskGroup() as group:
                while not stop.is_set():
                    if self._free == 0:
                        await self._wait_for_slot()
                        continue
                    for msg in await self._fetch(sub, stop):
                        self._free -= 1
                        group.create_task(self._deliver_and_release(msg))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _wait_for_slot(self) -> None:
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._fetch_wait_s):
                await self._freed.wait()

    async def _fetch(
        self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event
    ) -> list[Msg]:
        # never cancelled half way: a pull request left behind would hold jobs until ack wait
        try:
            return await sub.fetch(self._free, timeout=self._fetch_wait_s)
        except TimeoutError:  # nats-py raises its own or asyncio's: nothing to deliver
            return []
        except nats.errors.Error as exc:
            log.warning("webhook jobs: fetch failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ERROR_BACKOFF_S):
                    await stop.wait()
            return []

    async def _deliver_and_release(self, msg: Msg) -> None:
        try:
            await self._deliver(msg)
        except nats.errors.Error as exc:  # the ack or nak was lost: redelivered after ack wait
            log.warning("webhook job %s: settling failed: %r", _seq(msg), exc)
        finally:
            self._free += 1
            self._freed.set()

    async def _deliver(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered
        tenant, sid = _session_of(msg.subject)
        try:
            job = _parse_job(msg.data, tenant, sid)
            body = self._body(job)
        except Exception as exc:  # poison input is dead-lettered, whatever it breaks
            _FAILED.inc()
            await self._give_up(msg, tenant, sid, FAILED_CODE, f"malformed webhook job: {exc!r}")
            return
        started = time.monotonic()
        failure = await self._attempt(job, body, attempt)
        DELIVERY_SECONDS.observe(time.monotonic() - started)
        if failure is None:
            _OK.inc()
            await msg.ack()
        elif not failure.retryable:
            _REFUSED.inc()
            await self._give_up(msg, tenant, sid, REFUSED_CODE, failure.reason)
        elif attempt >= self._max_attempts:
            _FAILED.inc()
            reason = f"{attempt} attempts failed; the last: {failure.reason}"
            await self._give_up(msg, tenant, sid, FAILED_CODE, reason)
        else:
            _RETRY.inc()
            await msg.nak(delay=self.backoff(attempt))

    async def _attempt(self, job: _Job, body: bytes, attempt: int) -> _Failure | None:
        """One POST of the job; None when the receiver answered 2xx."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            ATTEMPT_HEADER: str(attempt),
        }
        secret = tenant_secret(self._secrets, job.event.tenant)
        if secret:
            headers[SIGNATURE_HEADER] = sign_body(secret, body)
        try:
            async with asyncio.timeout(self._timeout_s):
                address = await check_url(job.url, self._allow)
                status, reply = await post_pinned(
                    job.url,
                    address,
                    body,
                    headers,
                    timeout=self._timeout_s,
                    max_reply_bytes=MAX_REPLY_BYTES,
                )
        except UnresolvedHost as exc:  # DNS may come back: retried like a failed POST
            return _Failure(str(exc), retryable=True)
        except OutboundError as exc:
            return _Failure(f"webhook url refused: {exc}", retryable=False)
        except (TimeoutError, httpx.TimeoutException):
            return _Failure(f"timed out after {self._timeout_s:g} s", retryable=True)
        except httpx.HTTPError as exc:
            return _Failure(f"POST failed: {type(exc).__name__}", retryable=True)
        if 200 <= status < 300:
            return None
        excerpt = reply[:_EXCERPT_CHARS].decode("utf-8", "replace")
        return _Failure(f"HTTP {status}: {excerpt}", retryable=True)

    def _body(self, job: _Job) -> bytes:
        """`{deliveryId, sessionId, tenant, event, ts, data}`, data in the gateway's camelCase."""
        event = job.event
        external = to_external(event, all_types=True)
        type_, data = external if external is not None else (event.type, event.data)
        payload: dict[str, Any] = {
            "deliveryId": job.delivery_id,
            "sessionId": event.sid,
            "tenant": event.tenant,
            "event": type_,
            "ts": event.ts,
            "data": data,
        }
        return orjson.dumps(payload)

    async def _give_up(self, msg: Msg, tenant: str, sid: str, code: str, reason: str) -> None:
        """Dead-letter the job (its raw body, no secret in it), then terminate it.

        A dead letter that cannot be stored leaves the job to be tried again later.
        """
        seq = _seq(msg)
        headers = {
            "Flotilla-Error": code,
            "Flotilla-Error-Message": " ".join(reason.split())[:512],
            "Flotilla-Stream-Seq": str(seq),
            "Nats-Msg-Id": f"dlq-hook-{seq}",
        }
        try:
            await self._js.publish(self._subjects.dlq(tenant, sid), msg.data, headers=headers)
        except nats.errors.Error as exc:
            log.warning("webhook job %s: dead letter not stored: %r", seq, exc)
            await msg.nak(delay=self._backoff_cap_s)
            return
        log.info("webhook job %s of session %s dead-lettered: %s", seq, sid, code)
        await msg.term()


def _seq(msg: Msg) -> int:
    return msg.metadata.sequence.stream


def _session_of(subject: str) -> tuple[str, str]:
    """(tenant, sid) of `<prefix>.hook.<tenant>.<sid>`; `_` for a token that is missing."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[1] != "hook":
        return "_", "_"
    return parts[2], parts[3]


def _parse_job(data: bytes, tenant: str, sid: str) -> _Job:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    job = raw if isinstance(raw, dict) else {}
    url, delivery_id = job.get("url"), job.get("delivery_id")
    if not isinstance(url, str) or not isinstance(delivery_id, str) or not delivery_id:
        raise ValueError("a job is an object with string url and delivery_id")
    try:
        event = Event.model_validate(job.get("event"))
    except ValidationError as exc:
        raise ValueError(f"invalid event: {exc.error_count()} errors") from None
    if (event.tenant, event.sid) != (tenant, sid):
        raise ValueError("the event's session is not the subject's")
    return _Job(url, delivery_id, event)
