"""Human approval through the engine: approve once / always, reject with and without resume,
ask_user answered with respond."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import CommandError, Session
from schemas import approval_timeout
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end

WRITE = call("write_file", path="a.txt", content="x")


async def _session(
    fleet: Harness, *steps: dict[str, Any], tools: list[str] | None = None, **opts: Any
) -> Session:
    assert fleet.fleet is not None
    return await fleet.fleet.create_agent(
        model="mock:script",
        tools=tools or ["write_file", "read_file", "shell"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file", "shell"], **opts}}],
        provider_opts=script(*steps),
    )


async def _asked(session: Session) -> dict[str, Any]:
    return (await until(session, "approval_required"))[-1].data


async def test_approve_once_runs_the_call_and_resumes_the_turn(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "done"})
    await session.prompt("go")
    asked = await _asked(session)
    assert asked["tool"] == "write_file" and asked["args"]["path"] == "a.txt"
    await session.approve(asked["approval_id"])
    events = await until_end(session)
    assert of_type(events, "approval_resolved")[0]["status"] == "approved"
    assert of_type(events, "agent_resumed")[0]["trigger"] == "tool_approved"
    assert of_type(events, "tool_execution_end")[0]["status"] == "ok"
    assert events[-1].data["reason"] == "finished"


async def test_approve_always_allows_the_same_tool_family_without_asking(fleet: Harness) -> None:
    second = call("write_file", path="b.txt", content="y")
    session = await _session(
        fleet, {"tool_calls": [WRITE]}, {"tool_calls": [second]}, {"text": "done"}
    )
    await session.prompt("go")
    await session.approve((await _asked(session))["approval_id"], kind="always")
    events = await until_end(session)
    assert not of_type(events, "approval_required")
    assert [e["status"] for e in of_type(events, "tool_execution_end")] == ["ok", "ok"]


async def test_reject_without_resume_ends_the_turn_as_rejected(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "never"})
    await session.prompt("go")
    await session.reject((await _asked(session))["approval_id"], reason="no")
    events = await until_end(session)
    assert events[-1].type == "agent_end" and events[-1].data["reason"] == "rejected"
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and "rejected by the user" in results[0]["content"]


async def test_reject_with_resume_lets_the_llm_see_the_rejection(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "changed plan"})
    await session.prompt("go")
    await session.reject((await _asked(session))["approval_id"], auto_resume=True)
    events = await until_end(session)
    assert of_type(events, "agent_resumed")[0]["trigger"] == "tool_rejected"
    assert events[-1].data["last_message"]["content"] == "changed plan"


async def test_an_unknown_approval_id_is_an_error_event(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"})
    command_id = await session.approve("ap-nothing")
    error = (await until(session, "error"))[-1]
    assert error.data["code"] == "not_found" and error.request_id == command_id


async def test_a_waiting_session_is_idle_and_queues_prompts(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "one"}, {"text": "two"})
    await session.prompt("go")
    approval_id = (await _asked(session))["approval_id"]
    await session.prompt("next")
    assert (await until(session, "prompt_queued"))[-1].data["text"] == "next"
    await session.approve(approval_id)
    first = await until_end(session)
    second = await until_end(session)
    assert first[-1].data["last_message"]["content"] == "one"
    assert second[-1].data["last_message"]["content"] == "two"


async def test_approve_without_resume_waits_for_the_next_prompt(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "continued"})
    await session.prompt("go")
    await session.approve((await _asked(session))["approval_id"], auto_resume=False)
    await until(session, "approval_resolved")
    await session.prompt("carry on")
    events = await until_end(session)
    assert not of_type(events, "agent_resumed")
    assert of_type(events, "tool_execution_end")[0]["status"] == "ok"
    assert events[-1].data["last_message"]["content"] == "continued"


async def test_ask_user_waits_for_respond_and_passes_the_answer(fleet: Harness) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [call("ask_user", question="which?", options=["a", "b"])]},
        {"text": "thanks"},
        tools=["ask_user"],
    )
    await session.prompt("go")
    asked = (await until(session, "ask_user"))[-1].data
    assert asked["question"] == "which?" and asked["options"] == ["a", "b"]
    await session.respond(asked["ref"], "b")
    events = await until_end(session)
    assert of_type(events, "user_responded")[0]["response"] == "b"
    assert of_type(events, "tool_execution_end")[0] == {
        "name": "ask_user",
        "call_id": asked_call(events),
        "status": "ok",
        "result": "b",
    }
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["content"] == "b"


async def test_shell_approval_always_covers_its_command_family_only(
    harness_factory: Any,
) -> None:
    fleet = await (await harness_factory(shell_enabled=True)).start_fleet("w1")
    session = await _session(
        fleet,
        {"tool_calls": [call("shell", command="echo one")]},
        {"tool_calls": [call("shell", command="echo two")]},
        {"tool_calls": [call("shell", command="ls")]},
        {"text": "done"},
    )
    await session.prompt("go")
    await session.approve((await _asked(session))["approval_id"], kind="always")
    asked = await _asked(session)
    assert asked["args"]["command"] == "ls"


def asked_call(events: list[Any]) -> str:
    return str(of_type(events, "tool_execution_end")[0]["call_id"])


# -- permission_options, and what only the fleet may answer -----------------------------------
async def test_an_answer_the_approval_does_not_offer_is_refused(fleet: Harness) -> None:
    offered = ["approve_once", "reject_once"]
    session = await _session(
        fleet, {"tool_calls": [WRITE]}, {"text": "done"}, permission_options=offered
    )
    await session.prompt("go")
    asked = await _asked(session)
    assert asked["permission_options"] == offered
    always = await session.approve(asked["approval_id"], kind="always")
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"approval_resolved"}, request_id=always, timeout=5)
    assert refused.value.code == "permission_not_offered"
    assert "offered: approve_once, reject_once" in str(refused.value)
    assert (await fleet.state(session.sid))["pending_approvals"][0]["options"] == offered
    await session.approve(asked["approval_id"])
    events = await until_end(session)
    assert of_type(events, "approval_resolved")[0]["kind"] == "once"
    assert (await fleet.state(session.sid))["allowlist"] == []


async def test_every_answer_is_offered_by_default(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "done"})
    await session.prompt("go")
    asked = await _asked(session)
    assert asked["permission_options"] == ["approve_once", "approve_always", "reject_once"]


async def test_a_client_cannot_claim_an_approval_timed_out(fleet: Harness) -> None:
    session = await _session(fleet, {"tool_calls": [WRITE]}, {"text": "done"}, timeout_ms=60_000)
    await session.prompt("go")
    asked = await _asked(session)
    body, _ = approval_timeout("acme", session.sid, asked["approval_id"])
    forged = await session.send(
        "reject", **{k: v for k, v in body.items() if k not in ("op", "id")}
    )
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"approval_resolved"}, request_id=forged, timeout=5)
    assert refused.value.code == "forbidden"
    assert (await fleet.state(session.sid))["pending_approvals"], "still waiting"
    await session.approve(asked["approval_id"])
    assert (await until_end(session))[-1].data["reason"] == "finished"
