"""Session webhooks: jobs on <PREFIX>_HOOK from the workers, signed POSTs from the gateway's
deliverer, retries scheduled by JetStream (surviving a restart), dead letters at the end."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from flotilla import CommandError, Session
from flotilla.runtime import connect_nats
from gateway._webhooks import WebhookDeliverer
from schemas import SessionOptions
from tests.conftest import Harness, eventually
from tests.loopback_http import LoopbackServer
from workers._webhooks import delivery_id

SECRET = "hook-secret-of-acme"
LOOPBACK = ("127.0.0.1:*",)


class Receiver:
    """A webhook endpoint on 127.0.0.1: answers with the scripted statuses, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[float, bytes, dict[str, str]]] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        self.requests.append((time.monotonic(), await request.body(), dict(request.headers)))
        status = self.statuses.pop(0) if self.statuses else 200
        return PlainTextResponse("thanks" if status < 300 else "kaput", status_code=status)

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body, _ in self.requests]

    def attempts(self) -> list[str]:
        return [headers["x-flotilla-delivery-attempt"] for _, _, headers in self.requests]


class Replica:
    """A deliverer on its own NATS connection, as in one gateway replica."""

    def __init__(self, nc: NATS, deliverer: WebhookDeliverer) -> None:
        self.nc = nc
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(deliverer.run(self.stopping))

    async def stop(self) -> None:
        if not self.stopping.is_set():
            self.stopping.set()
            await self.task
            await self.nc.drain()


StartReplica = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    endpoint = Receiver()
    http = LoopbackServer(endpoint.app)
    await http.start()
    endpoint.url = f"http://127.0.0.1:{http.port}/hook"
    yield endpoint
    await http.stop()


@pytest.fixture
async def hooked(harness_factory: Callable[..., Awaitable[Harness]]) -> Harness:
    """A fleet whose workers accept loopback webhook URLs."""
    harness = await harness_factory(callback_allow=LOOPBACK)
    return await harness.start_fleet("w1")


@pytest.fixture
async def replica(hooked: Harness) -> AsyncIterator[StartReplica]:
    started: list[Replica] = []

    async def start(**options: Any) -> Replica:
        nc = await connect_nats(hooked.settings, name="gateway test")
        deliverer = WebhookDeliverer(
            nc,
            subjects=hooked.settings.subjects,
            tenant_secrets=f"other:x,acme:{SECRET}",
            allow=options.pop("allow", LOOPBACK),
            **{"backoff_base_s": 0.05, "fetch_wait_s": 0.1, **options},
        )
        started.append(Replica(nc, deliverer))
        return started[-1]

    yield start
    for running in started:
        await running.stop()


async def _session(harness: Harness, url: str, *events: str, **options: Any) -> Session:
    assert harness.fleet is not None
    webhook: dict[str, Any] = {"url": url, **({"events": list(events)} if events else {})}
    return await harness.fleet.create_agent(model="mock:echo", webhook=webhook, **options)


async def _hook_stream(harness: Harness) -> tuple[int, int]:
    """(jobs ever stored, jobs still waiting) of the fleet's hook stream."""
    assert harness.nc is not None
    info = await harness.nc.jetstream().stream_info(harness.settings.subjects.hook_stream)
    return info.state.last_seq, info.state.messages


async def _hook_stream_empty(harness: Harness) -> bool:
    return (await _hook_stream(harness))[1] == 0


async def _dead_letter(harness: Harness, sid: str) -> tuple[dict[str, str], bytes]:
    """The session's dead letter (headers, data), once there is one."""
    assert harness.nc is not None
    js, subjects = harness.nc.jetstream(), harness.settings.subjects
    found: list[RawStreamMsg] = []

    async def stored() -> bool:
        with contextlib.suppress(NotFoundError):
            found.append(await js.get_last_msg(subjects.dlq_stream, subjects.dlq("acme", sid)))
        return bool(found)

    await eventually(stored, what="the dead letter")
    return dict(found[0].headers or {}), found[0].data or b""


def _delivered(outcome: str) -> float:
    sample = REGISTRY.get_sample_value(
        "flotilla_gateway_webhook_deliveries_total", {"outcome": outcome}
    )
    return sample or 0.0


async def test_a_listed_event_is_posted_signed_with_camel_case_data(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    await replica()
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    assert await session.collect_reply(timeout=5) == "echo: hi"
    await eventually(lambda: bool(receiver.requests), what="the webhook POST")
    [(_, body, headers)] = receiver.requests
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-flotilla-signature"] == f"sha256={expected}"
    posted = orjson.loads(body)
    assert (posted["event"], posted["sessionId"], posted["tenant"]) == (
        "agent_end",
        session.sid,
        "acme",
    )
    assert posted["data"]["lastMessage"] == {"role": "assistant", "content": "echo: hi"}
    assert set(posted["data"]["tokenUsage"]) == {"promptTokens", "completionTokens", "totalTokens"}
    assert len(posted["deliveryId"]) == 32 and isinstance(posted["ts"], int)
    await eventually(lambda: _hook_stream_empty(hooked), what="the job acknowledged")
    assert await _hook_stream(hooked) == (1, 0)  # one job ever: no other event had one


async def test_only_the_listed_events_are_delivered(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    await replica()
    session = await _session(hooked, receiver.url, "error")
    await session.prompt("hi")
    await session.collect_reply(timeout=5)
    await session.attach_tool("no_such_tool")
    await eventually(lambda: bool(receiver.requests), what="the error webhook")
    [posted] = receiver.bodies()
    assert (posted["event"], posted["data"]["code"]) == ("error", "invalid_tool")
    assert (await _hook_stream(hooked))[0] == 1


async def test_a_failing_receiver_is_retried_with_growing_delays(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    receiver.statuses = [500, 500]
    retries, oks = _delivered("retry"), _delivered("ok")
    await replica(backoff_base_s=0.1)
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    await eventually(lambda: len(receiver.requests) == 3, what="the third attempt")
    (t1, body, _), (t2, _, _), (t3, _, _) = receiver.requests
    assert t2 - t1 >= 0.09 and t3 - t2 >= 0.18
    assert receiver.attempts() == ["1", "2", "3"]
    assert all(b == body for _, b, _ in receiver.requests)  # same deliveryId, same signature
    await eventually(lambda: _delivered("ok") == oks + 1, what="the delivery counted")
    assert _delivered("retry") == retries + 2


async def test_the_retry_schedule_survives_a_deliverer_restart(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    receiver.statuses = [500]
    first = await replica(backoff_base_s=0.5)
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    await eventually(lambda: bool(receiver.requests), what="the first attempt")
    await first.stop()
    assert len(receiver.requests) == 1
    await replica(backoff_base_s=0.5)  # a new instance, a new connection: the same consumer
    await eventually(lambda: len(receiver.requests) == 2, what="the retry by the new replica")
    assert receiver.attempts() == ["1", "2"]
    await eventually(lambda: _hook_stream_empty(hooked), what="the job acknowledged")


async def test_a_delivery_that_keeps_failing_is_dead_lettered(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    receiver.statuses = [500] * 10
    await replica(max_attempts=3, backoff_base_s=0.02)
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    await eventually(lambda: _hook_stream_empty(hooked), what="the job terminated")
    await eventually(lambda: len(receiver.requests) == 3, what="three attempts")
    headers, data = await _dead_letter(hooked, session.sid)
    assert headers["Flotilla-Error"] == "webhook_failed"
    assert "HTTP 500: kaput" in headers["Flotilla-Error-Message"]
    job = orjson.loads(data)
    assert (job["url"], job["event"]["type"]) == (receiver.url, "agent_end")
    assert len(receiver.requests) == 3


async def test_a_url_refused_at_delivery_is_dead_lettered_at_once(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    refused = _delivered("refused")
    await replica(allow=())  # this gateway does not allow loopback, unlike the workers
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    headers, _ = await _dead_letter(hooked, session.sid)
    assert headers["Flotilla-Error"] == "callback_refused"
    assert _delivered("refused") == refused + 1
    assert receiver.requests == []


async def test_a_malformed_job_is_dead_lettered_and_delivery_goes_on(
    hooked: Harness, receiver: Receiver, replica: StartReplica
) -> None:
    await replica()
    await hooked.publish_raw(hooked.settings.subjects.hook("acme", "bogus"), b"not a job")
    headers, data = await _dead_letter(hooked, "bogus")
    assert (headers["Flotilla-Error"], data) == ("webhook_failed", b"not a job")
    session = await _session(hooked, receiver.url, "agent_end")
    await session.prompt("hi")
    await eventually(lambda: bool(receiver.requests), what="the next job delivered")


@pytest.mark.parametrize(
    ("url", "allow"),
    [("http://169.254.169.254/latest/meta-data", ("*",)), ("http://127.0.0.1:9/hook", ())],
)
async def test_a_forbidden_webhook_url_is_refused_at_create(
    harness_factory: Callable[..., Awaitable[Harness]], url: str, allow: tuple[str, ...]
) -> None:
    harness = await (await harness_factory(callback_allow=allow)).start_fleet("w1")
    with pytest.raises(CommandError) as refused:
        await _session(harness, url, session_id="refused")
    assert refused.value.code == "callback_refused"
    assert await harness.state("refused") == {}
    assert harness.fleet is not None
    other = await harness.fleet.create_agent(model="mock:echo")
    await other.prompt("still there?")
    assert await other.collect_reply(timeout=5) == "echo: still there?"


@pytest.mark.parametrize(
    "webhook",
    [
        {"url": "https://example.com/h", "events": ["no_such_event"]},
        {"url": "ftp://example.com/h"},
        {"url": "https://user:pw@example.com/h"},
        {"url": "https://example.com/" + "x" * 2048},
    ],
)
def test_an_invalid_webhook_option_is_a_validation_error(webhook: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SessionOptions(model="mock:echo", webhook=webhook)


def test_a_webhook_defaults_to_the_turn_and_decision_events() -> None:
    options = SessionOptions(model="mock:echo", webhook={"url": "https://example.com/h"})
    assert options.webhook is not None
    assert options.webhook.events == ["agent_end", "error", "approval_required"]


def test_an_event_published_again_keeps_its_delivery_id() -> None:
    saved = "s1.3.agent_end"  # the message id of an agent_end the next owner re-announces
    assert delivery_id("acme", b'{"ts":1}', saved) == delivery_id("acme", b'{"ts":2}', saved)
    assert delivery_id("acme", b'{"ts":1}', None) != delivery_id("acme", b'{"ts":2}', None)
