"""Every option the fleet accepts does what CMDC says, or is refused with the reason: the same
refusal over NATS (`invalid_command`) and HTTP (422), and no session is left behind."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import CommandError
from schemas import new_session_id
from tests.gateway.conftest import GatewayUnderTest

APPROVAL = "human_approval"
CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("working_dir", {"working_dir": "/srv/app"}, {"workingDir": "/srv/app"}, "only '.' is"),
    ("memory", {"memory": ["AGENTS.md"]}, {"memory": ["AGENTS.md"]}, "memory_loader plugin"),
    ("sandbox", {"sandbox": "docker"}, {"sandbox": "docker"}, "scrubbed copy"),
    (
        "response_format",
        {"response_format": {"type": "json_object"}},
        {"responseFormat": {"type": "json_object"}},
        "structured output",
    ),
    (
        "event_buffer_size",
        {"event_buffer_size": -1},
        {"eventBufferSize": -1},
        "greater than or equal to 0",
    ),
    (
        "auto_checkpoint backend",
        {"plugins": [{"name": "auto_checkpoint", "opts": {"backend": "dets"}}]},
        {"plugins": [{"name": "auto_checkpoint", "opts": {"backend": "dets"}}]},
        "a per-session backend is not supported",
    ),
    (
        "auto_checkpoint on_events",
        {"plugins": [{"name": "auto_checkpoint", "opts": {"on_events": ["approval_required"]}}]},
        {"plugins": [{"name": "auto_checkpoint", "opts": {"on_events": ["approval_required"]}}]},
        "event names such as 'approval_required' are not supported yet",
    ),
    (
        "permission_options",
        {"plugins": [{"name": APPROVAL, "opts": {"permission_options": ["approve_maybe"]}}]},
        {"plugins": [{"name": APPROVAL, "opts": {"permission_options": ["approve_maybe"]}}]},
        "permission_options must be among",
    ),
    (
        "webhook events",
        {"webhook": {"url": "https://hooks.example.com/x", "events": ["stream_gap"]}},
        {"webhook": {"url": "https://hooks.example.com/x", "events": ["stream_gap"]}},
        "the fleet never sends 'stream_gap'",
    ),
    (
        "skills_dirs outside the workspace",
        {"skills_dirs": ["../elsewhere"]},
        {"skillsDirs": ["../elsewhere"]},
        "leaves the workspace",
    ),
    (
        "sub-agent plugins",
        {"subagents": [{"name": "x", "plugins": ["no_such_plugin"]}]},
        {"subagents": [{"name": "x", "plugins": ["no_such_plugin"]}]},
        "unknown plugin 'no_such_plugin'",
    ),
]


@pytest.mark.parametrize(
    ("nats_body", "http_body", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_an_option_the_fleet_does_not_honour_is_refused_alike_on_nats_and_http(
    gateway: GatewayUnderTest, nats_body: dict[str, Any], http_body: dict[str, Any], reason: str
) -> None:
    fleet = gateway.fleet.fleet
    assert fleet is not None
    sid = new_session_id()
    session = await fleet.session(sid)
    sent = await session.send("create", model="mock:echo", **nats_body)
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"session_created"}, request_id=sent, timeout=10)
    assert refused.value.code == "invalid_command" and reason in str(refused.value)
    async with gateway.client() as http:
        answer = await http.post("/v1/sessions", json={"model": "mock:echo", **http_body})
    assert answer.status_code == 422
    # the same reason; HTTP names the field as HTTP clients spell it (camelCase)
    assert answer.json()["message"].partition(": ")[2] == str(refused.value).partition(": ")[2]
    assert await gateway.fleet.state(sid) == {}
    async with gateway.client() as http:
        assert (await http.get("/v1/sessions")).json() == {"sessions": []}


async def test_an_unknown_option_is_refused_with_its_name(gateway: GatewayUnderTest) -> None:
    fleet = gateway.fleet.fleet
    assert fleet is not None
    session = await fleet.session(new_session_id())
    sent = await session.send(
        "create", model="mock:echo", max_turn=3, subagents=[{"name": "x", "plugin": []}]
    )
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"session_created"}, request_id=sent, timeout=10)
    assert str(refused.value) == (
        "max_turn: unknown field: not an option this fleet knows (a typo?); "
        "subagents[0].plugin: unknown field: not an option this fleet knows (a typo?)"
    )
    async with gateway.client() as http:
        answer = await http.post("/v1/sessions", json={"model": "mock:echo", "maxTurn": 3})
    assert answer.json() == {
        "error": "invalid_request",
        "message": "maxTurn: unknown field: not an option this fleet knows (a typo?)",
    }
    with pytest.raises(CommandError, match="max_turn: unknown field"):
        await fleet.create_agent(model="mock:echo", max_turn=3)


async def test_the_options_the_fleet_honours_are_accepted(gateway: GatewayUnderTest) -> None:
    async with gateway.client() as http:
        answer = await http.post(
            "/v1/sessions",
            json={
                "model": "mock:echo",
                "workingDir": ".",
                "eventBufferSize": 200,
                "skillsDirs": [".flotilla/skills"],
                "subagents": [{"name": "x", "plugins": [], "skillsDirs": ["kit"]}],
            },
        )
    assert answer.status_code == 201, answer.text
