"""Operations of the gateway: health, metrics, the shared rate limit, the meter, callback
tools and webhooks, the provider registry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import Harness, eventually, redis_refused
from tests.engine_helpers import call
from tests.gateway.conftest import GatewayFactory, GatewayUnderTest
from tests.loopback_http import LoopbackServer

SECRET = "acme-hmac-secret"


async def test_healthz_reports_sessions_and_tracked_keys(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        await http.post("/v1/sessions", json={"model": "mock:echo"})
        health = await http.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["version"]
    assert body["sessions"]["active"] == 1 and body["meter"]["tracked_keys"] == 1
    assert "T" in body["timestamp"]


async def test_metrics_count_requests_by_route_and_status(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        await http.get("/v1/sessions/nope")
        text = (await http.get("/metrics")).text
    assert (
        'flotilla_gateway_requests_total{method="GET",route="/v1/sessions/{sid}",status="404"}'
        in text
    )
    assert "flotilla_gateway_request_seconds_bucket" in text
    assert "k-acme" not in text


async def test_the_rate_limit_is_shared_by_two_gateways(gateway_factory: GatewayFactory) -> None:
    first = await gateway_factory(rate_limit_rpm=60, rate_limit_burst=4)
    second = await gateway_factory(rate_limit_rpm=60, rate_limit_burst=4)
    statuses = []
    for target in (first, second, first, second, first, second):
        async with target.client() as http:
            reply = await http.get("/v1/sessions")
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert int(reply.headers["Retry-After"]) >= 1
                assert reply.json()["error"] == "rate_limited"
    assert statuses == [200, 200, 200, 200, 429, 429]
    async with first.client("k-acme-2") as other_key:  # another key has its own bucket
        assert (await other_key.get("/v1/sessions")).status_code == 200


async def test_usage_counts_requests_prompts_and_tokens(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        sid = (await http.post("/v1/sessions", json={"model": "mock:echo"})).json()["sessionId"]
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "count me"})

        async def counted() -> bool:
            usage = (await http.get("/v1/usage")).json()
            return bool(usage["tokens"] > 0)

        await eventually(counted)
        usage = (await http.get("/v1/usage")).json()
    assert usage["prompts"] == 1 and usage["requests"] >= 3


class Receiver:
    """A local HTTP endpoint for callback tools and webhooks; `fail` first answers 500."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        self.fail = fail
        self.server = LoopbackServer(
            Starlette(routes=[Route("/{p}", self._handle, methods=["POST"])])
        )

    async def _handle(self, request: Request) -> Response:
        self.bodies.append((await request.body(), dict(request.headers)))
        if self.fail:
            self.fail -= 1
            return Response("down", status_code=500)
        return JSONResponse({"result": "42 parcels"})

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}/{path}"


def _signed(body: bytes, headers: dict[str, str]) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-flotilla-signature", ""), expected)


async def _local_fleet(harness_factory: Callable[..., Awaitable[Harness]]) -> Harness:
    harness = await harness_factory(
        callback_allow=("127.0.0.1:*",), tenant_secrets=f"acme:{SECRET}"
    )
    return await harness.start_fleet("w1")


async def test_a_callback_tool_is_served_by_a_local_server(
    harness_factory: Callable[..., Awaitable[Harness]], gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(await _local_fleet(harness_factory))
    receiver = Receiver()
    await receiver.server.start()
    try:
        script = {"script": [{"tool_calls": [call("track", id="p1")]}, {"text": "done"}]}
        async with gateway.client() as http:
            sid = (
                await http.post(
                    "/v1/sessions", json={"model": "mock:script", "providerOpts": script}
                )
            ).json()["sessionId"]
            tool = {
                "name": "track",
                "description": "Track a parcel",
                "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                "callbackUrl": receiver.url("track"),
            }
            registered = await http.post(f"/v1/sessions/{sid}/tools", json=tool)
            assert registered.status_code == 201 and registered.json() == {"name": "track"}
            refused = await http.post(
                f"/v1/sessions/{sid}/tools",
                json={**tool, "name": "meta", "callbackUrl": "http://169.254.169.254/latest"},
            )
            assert refused.status_code == 422 and refused.json()["error"] == "callback_refused"
            await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "where is p1?"})

            async def answered() -> bool:
                return bool((await http.get(f"/v1/sessions/{sid}/stats")).json()["turns"] == 1)

            await eventually(answered)
            messages = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
        [(body, headers)] = receiver.bodies
        assert _signed(body, headers)
        sent = orjson.loads(body)
        assert sent["sessionId"] == sid and sent["toolName"] == "track"
        assert sent["args"] == {"id": "p1"}
        assert any("42 parcels" in str(m["content"]) for m in messages)
    finally:
        await receiver.server.stop()


async def test_a_webhook_is_retried_after_failures_and_signed(
    harness_factory: Callable[..., Awaitable[Harness]], gateway_factory: GatewayFactory
) -> None:
    gateway = await gateway_factory(
        await _local_fleet(harness_factory), webhook_backoff_base_s=0.05
    )
    receiver = Receiver(fail=2)
    await receiver.server.start()
    try:
        async with gateway.client() as http:
            created = await http.post(
                "/v1/sessions",
                json={
                    "model": "mock:echo",
                    "webhook": {"url": receiver.url("hook"), "events": ["agent_end"]},
                },
            )
            assert created.status_code == 201, created.text
            sid = created.json()["sessionId"]
            await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "ping"})
            await eventually(lambda: len(receiver.bodies) == 3)
        await asyncio.sleep(0.2)
        assert len(receiver.bodies) == 3  # delivered once it succeeded
        body, headers = receiver.bodies[-1]
        assert _signed(body, headers)
        delivered: dict[str, Any] = orjson.loads(body)
        assert delivered["sessionId"] == sid and delivered["event"] == "agent_end"
        assert delivered["data"]["lastMessage"]["content"] == "echo: ping"
        assert len({orjson.loads(b)["deliveryId"] for b, _ in receiver.bodies}) == 1
    finally:
        await receiver.server.stop()


async def test_providers_need_an_admin_key_and_never_show_secrets(
    gateway: GatewayUnderTest,
) -> None:
    profile = {"provider": "mock", "opts": {"api_key": "sk-GW-SECRET", "base_url": "http://x"}}
    async with gateway.client() as http:
        assert (await http.get("/v1/providers")).status_code == 403
    async with gateway.client("k-admin") as admin:
        put = await admin.put("/v1/providers/gw-prof", json=profile)
        assert put.status_code == 200 and put.json()["revision"] >= 1

        async def listed() -> bool:
            names = [p["name"] for p in (await admin.get("/v1/providers")).json()["providers"]]
            return "gw-prof" in names

        await eventually(listed)
        shown = (await admin.get("/v1/providers/gw-prof")).json()
        assert shown["opts"]["api_key"] == "***" and "sk-GW-SECRET" not in str(shown)
        assert (await admin.delete("/v1/providers/gw-prof")).status_code == 200
        assert (await admin.delete("/v1/providers/gw-prof")).status_code == 404


async def test_redis_unreachable_is_a_503_everywhere_and_harms_nothing(
    gateway: GatewayUnderTest, free_tcp_port: int
) -> None:
    async with gateway.client() as http:
        sid = (await http.post("/v1/sessions", json={"model": "mock:echo"})).json()["sessionId"]
    async with redis_refused(gateway.server.app.state.gateway.redis, free_tcp_port):
        async with gateway.client() as http:
            health = await http.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            for reply in (
                await http.get(f"/v1/sessions/{sid}"),
                await http.get("/v1/sessions"),
                await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "hi"}),
            ):
                assert reply.status_code == 503, reply.text
                assert reply.json()["error"] == "unavailable"
        url = f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/{sid}/ws?api_key=k-acme"
        with pytest.raises(websockets.InvalidStatus) as denied:
            async with websockets.connect(url):
                pass
        assert denied.value.response.status_code == 503
    async with gateway.client() as http:  # back: the session is as it was, no prompt ran
        assert (await http.get("/healthz")).status_code == 200
        detail = (await http.get(f"/v1/sessions/{sid}")).json()
        assert detail["state"] == "idle" and detail["turns"] == 0


async def test_nats_unreachable_makes_health_degraded_and_commands_503(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        sid = (await http.post("/v1/sessions", json={"model": "mock:echo"})).json()["sessionId"]
        await gateway.server.app.state.gateway.nc.close()
        health = await http.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        reply = await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "hi"})
        assert reply.status_code == 503 and reply.json()["error"] == "unavailable"
        assert (await http.get(f"/v1/sessions/{sid}")).json()["turns"] == 0  # reads still work
