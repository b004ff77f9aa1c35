"""Sub-agents through the gateway: listed under their parent, their approvals answered on
them, the parent's wait for them out of any client's reach (PROTOCOL §6.11)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import eventually
from tests.engine_helpers import call
from tests.gateway.conftest import GatewayUnderTest

WRITER = {
    "name": "writer",
    "model": "mock:script",
    "providerOpts": {
        "script": [
            {"tool_calls": [call("write_file", path="a.txt", content="x")]},
            {"text": "child done"},
        ]
    },
}
PARENT = {
    "model": "mock:script",
    "sessionId": "boss",
    "groupId": "crew",
    "tools": ["task", "write_file"],
    "plugins": [{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
    "subagents": [WRITER],
    "providerOpts": {
        "script": [
            {"tool_calls": [call("task", description="write", subagent_type="writer")]},
            {"text": "parent done"},
        ]
    },
}


async def _listed(http: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = (await http.get(f"/v1/sessions{query}")).json()["sessions"]
    return sessions


async def test_a_sub_agent_is_listed_under_its_parent_and_answered_there(
    gateway: GatewayUnderTest,
) -> None:
    async with gateway.client() as http:
        assert (await http.post("/v1/sessions", json=PARENT)).status_code == 201
        await http.post("/v1/sessions/boss/prompt", json={"text": "delegate"})
        children: list[dict[str, Any]] = []

        async def child_waits() -> bool:
            children[:] = await _listed(http, "?parentId=boss")
            return bool(children) and children[0]["state"] == "waiting_approval"

        await eventually(child_waits, what="the sub-agent waiting for its approval")
        child = children[0]["sessionId"]
        assert children[0]["parentId"] == "boss"
        assert [s["sessionId"] for s in await _listed(http)] == ["boss"]
        detail = (await http.get(f"/v1/sessions/{child}")).json()
        assert detail["parentId"] == "boss" and detail["groupId"] == "crew"
        ref = (await gateway.fleet.state("boss"))["pending_questions"][0]["ref"]
        forged = await http.post(
            "/v1/sessions/boss/respond", json={"ref": ref, "response": "invented"}
        )
        assert forged.status_code == 403 and forged.json()["error"] == "forbidden"
        approval = detail["pendingApprovals"][0]["approvalId"]
        approved = await http.post(f"/v1/sessions/{child}/approve", json={"approvalId": approval})
        assert approved.status_code == 200

        async def all_done() -> bool:
            boss = (await http.get("/v1/sessions/boss")).json()
            return boss["state"] == "idle" and not await _listed(http, "?parentId=boss")

        await eventually(all_done, what="the parent finished and the sub-agent stopped")
        messages = (await http.get("/v1/sessions/boss/messages")).json()["messages"]
        assert messages[-1]["content"] == "parent done"
        assert (await http.get(f"/v1/sessions/{child}")).status_code == 404
        assert (await http.get("/healthz")).json()["sessions"]["active"] == 1


async def test_another_tenants_parent_lists_nothing(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        await http.post("/v1/sessions", json={"model": "mock:echo", "sessionId": "mine"})
    async with gateway.client("k-beta") as http:
        assert (await http.get("/v1/sessions?parentId=mine")).status_code == 404
