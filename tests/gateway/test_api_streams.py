"""SSE and WebSocket streams of PROTOCOL §8 through a real gateway on the test fleet."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest
import websockets
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.conftest import eventually
from tests.engine_helpers import call
from tests.gateway.conftest import GatewayFactory, GatewayUnderTest

ANSWER = {"script": [{"text": "streamed answer"}] * 4}


async def _create(http: httpx.AsyncClient, **body: Any) -> str:
    reply = await http.post("/v1/sessions", json={"model": "mock:script", **body})
    assert reply.status_code == 201, reply.text
    sid: str = reply.json()["sessionId"]
    return sid


async def _read(
    http: httpx.AsyncClient, path: str, *, until: str, headers: dict[str, str] | None = None
) -> list[ServerSentEvent]:
    seen: list[ServerSentEvent] = []
    async with (
        asyncio.timeout(10),
        aconnect_sse(http, "GET", path, headers=dict(headers or {})) as source,
    ):
        async for sse in source.aiter_sse():
            seen.append(sse)
            if sse.event == until:
                break
    return seen


async def test_a_client_connecting_after_a_fast_turn_sees_all_of_it(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        sid = await _create(http, providerOpts=ANSWER)
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "one"})

        async def over() -> bool:  # the turn is over before the client connects
            return bool((await http.get(f"/v1/sessions/{sid}/stats")).json()["turns"] == 1)

        await eventually(over)
        events = await _read(http, f"/v1/sessions/{sid}/events", until="agent_end")
    types = [e.event for e in events]
    assert types[0] == "prompt_received" and types[-1] == "agent_end"
    assert "message_delta" in types and "llm_call" not in types  # the 15 external types
    end = orjson.loads(events[-1].data)
    assert end["lastMessage"] == {"role": "assistant", "content": "streamed answer"}
    assert end["tokenUsage"]["completionTokens"] > 0
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_the_agent_end_of_a_failed_turn_carries_its_reason_and_error(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        sid = await _create(http, providerOpts={"script": [{"error": "auth"}]})
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "one"})
        events = await _read(http, f"/v1/sessions/{sid}/events", until="agent_end")
    end = orjson.loads(events[-1].data)
    assert end["reason"] == "error"
    assert end["error"] == {"code": "auth", "message": "mock provider error: auth"}
    async with websockets.connect(
        f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/{sid}/ws?api_key=k-acme&since=0"
    ) as ws:
        while (message := orjson.loads(await ws.recv()))["event"] != "agent_end":
            pass
    assert message["data"]["reason"] == "error" and message["data"]["error"]["code"] == "auth"


async def test_last_event_id_resumes_with_no_gap_and_no_duplicate(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        sid = await _create(http, providerOpts=ANSWER)
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "one"})
        everything = await _read(http, f"/v1/sessions/{sid}/events?types=all", until="agent_end")
        middle = everything[len(everything) // 2]
        resumed = await _read(
            http,
            f"/v1/sessions/{sid}/events?types=all",
            until="agent_end",
            headers={"Last-Event-ID": middle.id},
        )
        since = await _read(
            http, f"/v1/sessions/{sid}/events?types=all&since={middle.id}", until="agent_end"
        )
    after = [e.id for e in everything if int(e.id) > int(middle.id)]
    assert [e.id for e in resumed] == after == [e.id for e in since]
    assert any(e.event == "llm_call" for e in everything)  # types=all


async def test_a_cursor_older_than_the_stream_gets_stream_gap_first(
    gateway: GatewayUnderTest,
) -> None:
    fleet = gateway.fleet
    assert fleet.nc is not None
    async with gateway.client() as http:
        sid = await _create(http, providerOpts=ANSWER)
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "one"})
        await _read(http, f"/v1/sessions/{sid}/events", until="agent_end")
        js = fleet.nc.jetstream()
        stream = fleet.settings.subjects.evt_stream
        last = (await js.stream_info(stream)).state.last_seq
        await js.purge_stream(stream, keep=1)  # everything before `last` is gone
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "two"})
        events = await _read(http, f"/v1/sessions/{sid}/events?since=1", until="agent_end")
    assert events[0].event == "stream_gap"
    gap = orjson.loads(events[0].data)
    assert gap["requested"] == 1 and gap["firstAvailable"] >= last
    assert events[-1].event == "agent_end"


async def test_a_group_stream_carries_every_session_with_its_id(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        a = await _create(http, providerOpts=ANSWER, groupId="room-9")
        b = await _create(http, providerOpts=ANSWER, groupId="room-9")
        ends: list[str] = []
        connected = asyncio.Event()

        async def read() -> None:
            async with aconnect_sse(http, "GET", "/v1/groups/room-9/events") as source:
                connected.set()  # the stream's start was fixed when the request arrived
                async for sse in source.aiter_sse():
                    if sse.event == "agent_end":
                        ends.append(orjson.loads(sse.data)["sessionId"])
                        if len(ends) == 2:
                            return

        reader = asyncio.create_task(read())
        await asyncio.wait_for(connected.wait(), 10)
        for sid in (a, b):
            await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "go"})
        await asyncio.wait_for(reader, 10)
    assert sorted(ends) == sorted([a, b])
    async with gateway.client("k-beta") as beta:  # another tenant's group stream is empty
        seen: list[str] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await _collect(beta, "/v1/groups/room-9/events?since=0", seen)
        assert seen == []


async def _collect(http: httpx.AsyncClient, path: str, seen: list[str]) -> None:
    async with aconnect_sse(http, "GET", path) as source:
        async for sse in source.aiter_sse():
            seen.append(sse.event)


async def test_websocket_approval_flow_acks_before_events(gateway: GatewayUnderTest) -> None:
    script = {
        "script": [
            {"tool_calls": [call("write_file", path="a.txt", content="x")]},
            {"text": "written"},
        ]
    }
    async with gateway.client() as http:
        sid = await _create(
            http,
            providerOpts=script,
            tools=["write_file"],
            plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
        )
    url = f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/{sid}/ws?api_key=k-acme"
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"action": "prompt", "text": "write it"}).decode())
        first = orjson.loads(await ws.recv())
        assert first["ok"] is True and first["action"] == "prompt"
        request_id = first["requestId"]
        approval = None
        while approval is None:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("event") == "approval_required":
                approval = message["data"]
        assert approval["toolName"] == "write_file"
        await ws.send(
            orjson.dumps({"action": "approve", "approvalId": approval["approvalId"]}).decode()
        )
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply["ok"] is True and reply["action"] == "approve"  # before approval_resolved
        seen = []
        while not seen or seen[-1]["event"] != "agent_end":
            seen.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert "approval_resolved" in [m["event"] for m in seen]
        assert seen[-1]["data"]["lastMessage"]["content"] == "written"
        await ws.send(orjson.dumps({"action": "dance"}).decode())
        refused = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refused["ok"] is False and refused["error"] == "invalid_request"
    assert request_id


async def test_websocket_refuses_a_bad_key_before_the_upgrade(gateway: GatewayUnderTest) -> None:
    url = f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/any/ws?api_key=nope"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url):
            pass
    assert refused.value.response.status_code == 401


async def test_websocket_connects_and_actions_take_from_the_keys_bucket(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(rate_limit_rpm=60, rate_limit_burst=3)
    async with gateway.client() as http:
        sid = await _create(http)  # token 1
    url = f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/{sid}/ws?api_key=k-acme"
    async with websockets.connect(url) as ws:  # token 2
        await ws.send(orjson.dumps({"action": "steer", "text": "a"}).decode())  # token 3
        assert (await _next_reply(ws))["ok"] is True
        await ws.send(orjson.dumps({"action": "steer", "text": "b"}).decode())
        refused = await _next_reply(ws)
        assert (refused["ok"], refused["error"]) == (False, "rate_limited")
        with pytest.raises(websockets.InvalidStatus) as denied:  # a new connect is refused
            async with websockets.connect(url):
                pass
        assert denied.value.response.status_code == 429
        assert int(denied.value.response.headers["Retry-After"]) >= 1
        await ws.send(orjson.dumps({"action": "dance"}).decode())  # the socket still serves
        reply = await _next_reply(ws)
        assert reply["error"] == "invalid_request"
    async with gateway.client("k-beta") as beta:  # another key has its own bucket
        assert (await beta.get("/v1/sessions")).status_code == 200


async def _next_reply(ws: websockets.ClientConnection) -> dict[str, Any]:
    """The next reply to an action, past the events forwarded meanwhile."""
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if "ok" in message:
            return message
