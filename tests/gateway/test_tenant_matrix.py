"""Tenant B against tenant A's session, on every path in: every HTTP route, the WebSocket
(its six actions need a connection first), the SSE streams, every NATS command op and the
replay of events. B learns nothing: each answer about A's session is the answer about a
session that does not exist, and A's session is untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from flotilla import CommandError, Fleet
from gateway import create_app
from schemas import COMMAND_OPS, Event
from tests.conftest import eventually
from tests.engine_helpers import call
from tests.gateway.conftest import GatewayUnderTest

THEIRS, NOBODYS = "matrix-a", "matrix-none"
GROUP, NO_GROUP = "g-acme", "g-none"
BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/v1/sessions/{sid}"): None,
    ("DELETE", "/v1/sessions/{sid}"): None,
    ("POST", "/v1/sessions/{sid}/prompt"): {"text": "hello"},
    ("POST", "/v1/sessions/{sid}/approve"): {"approvalId": "ap-1"},
    ("POST", "/v1/sessions/{sid}/reject"): {"approvalId": "ap-1"},
    ("POST", "/v1/sessions/{sid}/respond"): {"ref": "q-1", "response": "yes"},
    ("POST", "/v1/sessions/{sid}/steer"): {"text": "left"},
    ("POST", "/v1/sessions/{sid}/abort"): {"reason": "stop"},
    ("POST", "/v1/sessions/{sid}/model"): {"model": "mock:echo"},
    ("POST", "/v1/sessions/{sid}/tools"): {
        "name": "t",
        "description": "d",
        "parameters": {"type": "object"},
        "callbackUrl": "https://tools.example.com/t",
    },
    ("POST", "/v1/sessions/{sid}/checkpoints"): {"label": "x"},
    ("GET", "/v1/sessions/{sid}/checkpoints"): None,
    ("GET", "/v1/sessions/{sid}/stats"): None,
    ("GET", "/v1/sessions/{sid}/messages"): None,
    ("GET", "/v1/sessions/{sid}/events"): None,
}
NATS_BODIES: dict[str, dict[str, Any]] = {
    "create": {"model": "mock:echo"},
    "prompt": {"text": "hello"},
    "steer": {"text": "left"},
    "abort": {},
    "approve": {"approval_id": "ap-1"},
    "reject": {"approval_id": "ap-1"},
    "respond": {"ref": "q-1", "response": "yes"},
    "subagent_result": {"ref": "sa-1", "child_sid": "c", "status": "ok", "signature": "x"},
    "switch_model": {"model": "mock:echo"},
    "attach_tool": {"tool": "read_file"},
    "detach_tool": {"tool": "read_file"},
    "update_plugin_opts": {"plugin": "human_approval", "opts": {}},
    "checkpoint": {},
    "hibernate": {},
    "stop": {},
}


def _same(answer: str, sid: str) -> str:
    """An answer with the session id in it made neutral, to compare two answers."""
    return answer.replace(sid, "<sid>")


@pytest.fixture
async def theirs(gateway: GatewayUnderTest) -> dict[str, Any]:
    """Tenant acme's session, waiting for an approval; its state before the matrix."""
    async with gateway.client("k-acme") as http:
        created = await http.post(
            "/v1/sessions",
            json={
                "model": "mock:script",
                "sessionId": THEIRS,
                "groupId": GROUP,
                "tools": ["write_file"],
                "plugins": [{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
                "providerOpts": {
                    "script": [{"tool_calls": [call("write_file", path="a", content="x")]}]
                },
            },
        )
        assert created.status_code == 201, created.text
        await http.post(f"/v1/sessions/{THEIRS}/prompt", json={"text": "write it"})

        async def waiting() -> bool:
            detail = (await http.get(f"/v1/sessions/{THEIRS}")).json()
            return bool(detail["state"] == "waiting_approval")

        await eventually(waiting, what="the approval")
    return await gateway.fleet.state(THEIRS)


def test_the_matrix_names_every_session_route() -> None:
    from flotilla.settings import GatewaySettings, Settings

    spec = create_app(Settings(), GatewaySettings()).openapi()
    routes = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if "{sid}" in path
        for method in operations
    }
    assert routes == set(BODIES)


async def test_every_http_route_answers_as_for_a_missing_session(
    gateway: GatewayUnderTest, theirs: dict[str, Any]
) -> None:
    async with gateway.client("k-beta") as http:
        for (method, path), body in BODIES.items():
            answers = []
            for sid in (THEIRS, NOBODYS):
                reply = await http.request(method, path.format(sid=sid), json=body)
                answers.append((reply.status_code, _same(reply.text, sid)))
            assert answers[0] == answers[1], (method, path, answers)
            assert answers[0][0] == 404, (method, path, answers)
        for query in (f"?parentId={THEIRS}", f"?parentId={NOBODYS}"):
            reply = await http.get(f"/v1/sessions{query}")
            assert reply.status_code == 404
        statuses = []
        for gid in (GROUP, NO_GROUP):  # a group stream is the caller's tenant's: both empty
            async with http.stream("GET", f"/v1/groups/{gid}/events") as stream:
                statuses.append((stream.status_code, stream.headers["content-type"]))
        assert statuses[0] == statuses[1] and statuses[0][0] == 200
        assert (await http.get("/v1/sessions")).json() == {"sessions": []}
        # creating "their" id is creating one's own: the same as any free id
        for sid in (THEIRS, NOBODYS):
            created = await http.post("/v1/sessions", json={"model": "mock:echo", "sessionId": sid})
            assert created.status_code == 201, created.text
    assert await gateway.fleet.state(THEIRS) == theirs


async def test_the_websocket_is_refused_as_for_a_missing_session(
    gateway: GatewayUnderTest, theirs: dict[str, Any]
) -> None:
    answers = []
    for sid in (THEIRS, NOBODYS):
        url = f"ws://127.0.0.1:{gateway.server.port}/v1/sessions/{sid}/ws?api_key=k-beta"
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        response = refused.value.response
        answers.append((response.status_code, _same(response.body.decode(), sid)))
    assert answers[0] == answers[1] and answers[0][0] == 404
    assert await gateway.fleet.state(THEIRS) == theirs


async def test_every_nats_command_and_the_replay_answer_as_for_a_missing_session(
    gateway: GatewayUnderTest, theirs: dict[str, Any]
) -> None:
    assert set(NATS_BODIES) == COMMAND_OPS
    ops = [op for op in NATS_BODIES if op != "create"] + ["create"]  # create last: it creates
    async with await Fleet.connect(settings=gateway.fleet.settings, tenant="beta") as beta:
        for op in ops:
            answers = []
            for sid in (THEIRS, NOBODYS):
                session = await beta.session(sid)
                sent = await session.send(op, **NATS_BODIES[op])
                if op == "create":
                    created = await session.wait_for(
                        {"session_created"}, request_id=sent, timeout=5
                    )
                    answers.append((created.type, created.tenant))
                else:
                    with pytest.raises(CommandError) as refused:
                        await session.wait_for(set(), request_id=sent, timeout=5)
                    answers.append((refused.value.code, _same(str(refused.value), sid)))
                await session.close()
            assert answers[0] == answers[1], (op, answers)
            assert answers[0][0] in ("session_not_found", "session_created"), (op, answers)
        views = [await _replay(beta, sid) for sid in (THEIRS, NOBODYS)]
    assert [e.type for e in views[0]] == [e.type for e in views[1]]
    assert all(e.tenant == "beta" and "write it" not in str(e.data) for e in views[0])
    assert await gateway.fleet.state(THEIRS) == theirs


async def _replay(fleet: Fleet, sid: str) -> list[Event]:
    """Every event a replay from the start gives this tenant about `sid`."""
    subjects = fleet.subjects
    info = await fleet.nc.jetstream().stream_info(
        subjects.evt_stream, subjects_filter=subjects.evt_session(sid, tenant=fleet.tenant)
    )
    kept = sum((info.state.subjects or {}).values())
    events: list[Event] = []
    stream = fleet.subscribe(sid=sid, since=0)
    async with asyncio.timeout(10):
        while len(events) < kept:
            events.append(await anext(stream))
    await stream.aclose()  # type: ignore[attr-defined]
    return events
