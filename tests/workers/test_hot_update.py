"""update_plugin_opts (seeds/000 recipe 15): merged when idle, postponed while busy with the
last update winning, vetoed by a `before_plugin_opts_update` hook; kept across a reload."""

from __future__ import annotations

from typing import Any

from flotilla import Session
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end

PLUGIN = "tests.workers.scripted_plugin:ScriptedPlugin"
SLOW = {"text": "a slow answer streaming in many small pieces", "chunk_delay_ms": 40}
WRITE = call("write_file", path="a.txt", content="x")


async def _session(
    harness_factory: Any, plugins: list[dict[str, Any]], *steps: dict[str, Any]
) -> tuple[Harness, Session]:
    fleet = await (await harness_factory(custom_plugins=(PLUGIN,))).start_fleet("w1")
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script", tools=["write_file"], plugins=plugins, provider_opts=script(*steps)
    )
    return fleet, session


APPROVAL = {"name": "human_approval", "opts": {"tools": ["write_file"]}}


async def test_an_update_while_busy_waits_for_the_turn_and_the_last_one_wins(
    harness_factory: Any,
) -> None:
    _, session = await _session(harness_factory, [APPROVAL], SLOW, {"tool_calls": [WRITE]})
    await session.prompt("go")
    await until(session, "message_delta")
    await session.update_plugin_opts("human_approval", {"tools": ["shell"]})
    await session.update_plugin_opts("human_approval", {"tools": []})
    events = await until(session, "plugin_opts_updated")
    assert [e.type for e in events].index("agent_end") < len(events) - 1, "after the turn"
    assert events[-1].data == {
        "plugin": "human_approval",
        "success": True,
        "error": None,
        "mode": "merge",
    }
    await session.prompt("write")
    later = await until_end(session)
    assert not of_type(later, "approval_required"), "the last update ({tools: []}) is in force"
    assert not of_type(later, "plugin_opts_updated"), "the first update was overwritten"


async def test_a_before_plugin_opts_update_hook_can_veto(harness_factory: Any) -> None:
    veto = {
        "name": "scripted",
        "opts": {
            "actions": {"before_plugin_opts_update": {"kind": "abort", "reason": "not allowed"}}
        },
    }
    _, session = await _session(harness_factory, [APPROVAL, veto], {"tool_calls": [WRITE]})
    await session.update_plugin_opts("human_approval", {"tools": []})
    updated = (await until(session, "plugin_opts_updated"))[-1].data
    assert updated == {
        "plugin": "human_approval",
        "success": False,
        "error": "blocked by scripted: not allowed",
        "mode": "blocked",
    }
    await session.prompt("write")
    assert (await until(session, "approval_required"))[-1].data["tool"] == "write_file"


async def test_an_update_survives_hibernation(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory, [APPROVAL], {"tool_calls": [WRITE]}, {"text": "done"}
    )
    await session.update_plugin_opts("human_approval", {"tools": []})
    await until(session, "plugin_opts_updated")
    await session.hibernate()
    await until(session, "session_hibernated")
    await session.prompt("write")
    events = await until_end(session)
    assert of_type(events, "session_resumed")
    assert not of_type(events, "approval_required")


async def test_an_invalid_update_is_refused_and_changes_nothing(harness_factory: Any) -> None:
    _, session = await _session(harness_factory, [APPROVAL], {"tool_calls": [WRITE]})
    await session.update_plugin_opts("human_approval", {"default": "maybe"})
    updated = (await until(session, "plugin_opts_updated"))[-1].data
    assert (updated["success"], updated["mode"]) == (False, "refused")
    assert "default" in updated["error"]
    await session.prompt("write")
    assert (await until(session, "approval_required"))[-1].data["tool"] == "write_file"


async def test_an_update_while_an_approval_waits_applies_at_once(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        tools=["write_file"],
        plugins=[
            {"name": "human_approval", "opts": {"tools": ["write_file"]}},
            {"name": "cost_guard", "opts": {"max_usd": 1.0}},
        ],
        provider_opts=script(
            {"tool_calls": [call("write_file", path="a.txt", content="x")]}, {"text": "done"}
        ),
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    await session.update_plugin_opts("cost_guard", {"max_usd": 7.0})
    updated = (await until(session, "plugin_opts_updated"))[-1]
    assert (updated.data["success"], updated.data["mode"]) == (True, "callback")
    state = await fleet.state(session.sid)
    assert state["plugin_opts"]["cost_guard"]["max_usd"] == 7.0 and state["pending_approvals"]
    await session.approve(asked["approval_id"])
    assert (await until_end(session))[-1].data["reason"] == "finished"
