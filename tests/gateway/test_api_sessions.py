"""Session endpoints of PROTOCOL §8 through a real gateway on the test fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.conftest import eventually
from tests.gateway.conftest import GatewayFactory, GatewayUnderTest

SCRIPT = {"script": [{"text": "hello from the fleet"}]}


async def _create(gateway: GatewayUnderTest, **body: Any) -> str:
    async with gateway.client() as http:
        reply = await http.post("/v1/sessions", json={"model": "mock:script", **body})
    assert reply.status_code == 201, reply.text
    sid: str = reply.json()["sessionId"]
    return sid


async def test_create_get_list_and_delete(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        created = await http.post(
            "/v1/sessions", json={"model": "mock:echo", "sessionId": "gw-1", "groupId": "room"}
        )
        assert created.status_code == 201
        assert created.json() == {"sessionId": "gw-1", "model": "mock:echo", "state": "idle"}
        detail = (await http.get("/v1/sessions/gw-1")).json()
        assert detail["sessionId"] == "gw-1" and detail["state"] == "idle"
        assert detail["groupId"] == "room" and detail["pendingApprovals"] == []
        listed = (await http.get("/v1/sessions")).json()["sessions"]
        assert [s["sessionId"] for s in listed] == ["gw-1"]
        assert listed[0]["createdAt"].endswith("Z")
        deleted = await http.delete("/v1/sessions/gw-1")
        assert deleted.status_code == 200 and deleted.json() == {
            "sessionId": "gw-1",
            "stopped": True,
        }
        assert (await http.get("/v1/sessions/gw-1")).status_code == 404
        assert (await http.get("/v1/sessions")).json()["sessions"] == []


async def test_prompt_then_stats_and_messages(gateway: GatewayUnderTest) -> None:
    sid = await _create(gateway, providerOpts=SCRIPT)
    async with gateway.client() as http:
        accepted = await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "hi"})
        assert accepted.status_code == 202
        body = accepted.json()
        assert body["sessionId"] == sid and body["queued"] is False
        assert len(body["requestId"]) == 16

        async def answered() -> bool:
            stats = (await http.get(f"/v1/sessions/{sid}/stats")).json()
            return bool(stats["turns"] == 1 and stats["tokenUsage"]["completionTokens"] > 0)

        await eventually(answered)
        stats = (await http.get(f"/v1/sessions/{sid}/stats")).json()
        assert stats["promptCount"] == 1 and stats["totalTokens"] > 0
        messages = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "hi"),
            ("assistant", "hello from the fleet"),
        ]


async def test_errors_have_their_status_and_shape(gateway: GatewayUnderTest) -> None:
    sid = await _create(gateway)
    async with gateway.client() as http:
        cases = [
            (await http.post("/v1/sessions", content=b"{not json"), 400, "invalid_json"),
            (await http.post("/v1/sessions", json=[1, 2]), 400, "invalid_json"),
            (await http.post("/v1/sessions", json={"model": "nomodel"}), 422, "invalid_request"),
            (await http.post("/v1/sessions", json={"model": "mock:echo", "x": 1}), 422, None),
            (
                await http.post("/v1/sessions", json={"model": "mock:echo", "sessionId": sid}),
                409,
                "already_exists",
            ),
            (
                await http.post("/v1/sessions", json={"model": "mock:echo", "tools": ["nope"]}),
                422,
                None,
            ),
            (
                await http.post("/v1/sessions", json={"model": "mock:echo", "sessionId": "a.b"}),
                422,
                None,
            ),
            (await http.get("/v1/sessions/unknown-sid"), 404, "not_found"),
            (
                await http.post(f"/v1/sessions/{sid}/approve", json={"approvalId": "ap-x"}),
                404,
                "not_found",
            ),
        ]
        big = {"text": "x" * 600_000}
        cases.append(
            (await http.post(f"/v1/sessions/{sid}/prompt", json=big), 413, "payload_too_large")
        )
    async with gateway.client(None) as anonymous:
        cases.append((await anonymous.get("/v1/sessions"), 401, "unauthorized"))
    async with gateway.client("wrong") as wrong:
        cases.append((await wrong.get("/v1/sessions"), 401, "unauthorized"))
    for reply, status, code in cases:
        assert reply.status_code == status, (reply.request.url, reply.text)
        body = reply.json()
        assert set(body) == {"error", "message"} and body["message"]
        if code is not None:
            assert body["error"] == code
    async with gateway.client() as http:  # nothing above harmed the session
        assert (await http.get(f"/v1/sessions/{sid}")).json()["state"] == "idle"


async def test_another_tenants_session_is_a_404_everywhere(gateway: GatewayUnderTest) -> None:
    sid = await _create(gateway)
    async with gateway.client("k-beta") as beta:
        for method, path, body in [
            ("GET", f"/v1/sessions/{sid}", None),
            ("DELETE", f"/v1/sessions/{sid}", None),
            ("POST", f"/v1/sessions/{sid}/prompt", {"text": "x"}),
            ("GET", f"/v1/sessions/{sid}/events", None),
            ("POST", f"/v1/sessions/{sid}/approve", {"approvalId": "a"}),
            ("POST", f"/v1/sessions/{sid}/reject", {"approvalId": "a"}),
            ("POST", f"/v1/sessions/{sid}/respond", {"ref": "r", "response": "x"}),
            ("POST", f"/v1/sessions/{sid}/steer", {"text": "x"}),
            ("POST", f"/v1/sessions/{sid}/abort", {}),
            ("POST", f"/v1/sessions/{sid}/model", {"model": "mock:echo"}),
            ("GET", f"/v1/sessions/{sid}/stats", None),
            ("GET", f"/v1/sessions/{sid}/messages", None),
            (
                "POST",
                f"/v1/sessions/{sid}/tools",
                {
                    "name": "t",
                    "description": "d",
                    "parameters": {},
                    "callbackUrl": "https://example.com/x",
                },
            ),
            ("POST", f"/v1/sessions/{sid}/checkpoints", {}),
            ("GET", f"/v1/sessions/{sid}/checkpoints", None),
        ]:
            reply = await beta.request(method, path, json=body)
            assert reply.status_code == 404, (method, path, reply.text)
            assert reply.json()["error"] == "not_found"
        assert (await beta.get("/v1/sessions")).json()["sessions"] == []
    async with gateway.client() as http:
        detail = (await http.get(f"/v1/sessions/{sid}")).json()
        assert detail["state"] == "idle" and detail["turns"] == 0


@pytest.mark.usefixtures("litellm_loopback")
async def test_an_unknown_model_provider_is_a_422_and_creates_nothing(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        reply = await http.post(
            "/v1/sessions", json={"model": "nosuchprovider:m", "sessionId": "u1"}
        )
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"] == "unsupported_provider"
        assert "nosuchprovider" in reply.json()["message"]
        assert (await http.get("/v1/sessions/u1")).status_code == 404
        assert (await http.get("/v1/sessions")).json()["sessions"] == []
        # a provider litellm knows is created (its key is only needed at the first request)
        reply = await http.post("/v1/sessions", json={"model": "anthropic:claude-x"})
        assert reply.status_code == 201, reply.text


async def test_an_oversize_body_is_a_413_whether_announced_or_streamed(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = await gateway_factory(max_body_bytes=1000)
    sid = await _create(gateway)
    big = orjson.dumps({"text": "x" * 2000})

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    async with gateway.client() as http:
        announced = await http.post(f"/v1/sessions/{sid}/prompt", content=big)
        streamed = await http.post(f"/v1/sessions/{sid}/prompt", content=chunks())
        on_a_get = await http.request("GET", f"/v1/sessions/{sid}", content=big)
        for reply in (announced, streamed, on_a_get):
            assert reply.status_code == 413, reply.text
            assert reply.json()["error"] == "payload_too_large"
        assert "transfer-encoding" in streamed.request.headers
        stats = (await http.get(f"/v1/sessions/{sid}/stats")).json()
        assert stats["promptCount"] == 0  # nothing was accepted
        small = await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "hi"})
        assert small.status_code == 202


async def test_messages_give_tool_calls_back_in_the_form_create_takes(
    gateway: GatewayUnderTest,
) -> None:
    calls = [{"callId": "c1", "name": "grep", "arguments": {"pattern": "x", "maxCount": 2}}]
    history = [
        {"role": "user", "content": "find x"},
        {"role": "assistant", "toolCalls": calls},
        {"role": "tool_result", "callId": "c1", "name": "grep", "content": "no match"},
    ]
    sid = await _create(gateway, messages=history)
    async with gateway.client() as http:
        messages = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
    assert messages[1]["role"] == "assistant"
    assert messages[1]["toolCalls"] == calls  # arguments are the tool's own, kept as they are
    assert messages[2]["content"] == "no match"


async def test_messages_keep_ids_names_errors_and_thinking_for_a_round_trip(
    gateway: GatewayUnderTest,
) -> None:
    failing = {"name": "read_file", "arguments": {"path": "missing.txt"}}
    script = {
        "script": [
            {"thinking": "look first", "tool_calls": [failing]},
            {"text": "there is no such file"},
        ]
    }
    sid = await _create(gateway, tools=["read_file"], providerOpts=script)
    async with gateway.client() as http:
        await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "read it"})
        await eventually(lambda: _settled(http, sid), what="the turn's four messages")
        messages = (await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]
    _user, assistant, result, final = messages
    assert assistant["thinking"] == "look first"
    (called,) = assistant["toolCalls"]
    assert result["callId"] == called["callId"] and result["name"] == "read_file"
    assert result["isError"] is True and final["content"] == "there is no such file"
    copy = await _create(gateway, model="mock:echo", messages=messages)
    async with gateway.client() as http:
        again = (await http.get(f"/v1/sessions/{copy}/messages")).json()["messages"]
    assert again == messages


async def _settled(http: Any, sid: str) -> bool:
    return len((await http.get(f"/v1/sessions/{sid}/messages")).json()["messages"]) == 4
