"""Plugins at the engine's hooks: each action has its effect on the turn; a forbidden one is
refused with an error event; a crash is contained."""

from __future__ import annotations

from typing import Any

from flotilla import Session
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end

PLUGIN = "tests.workers.scripted_plugin:ScriptedPlugin"


async def _session(
    harness_factory: Any, opts: dict[str, Any], *steps: dict[str, Any], **options: Any
) -> tuple[Harness, Session]:
    fleet = await (await harness_factory(custom_plugins=(PLUGIN,))).start_fleet("w1")
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        plugins=[{"name": "scripted", "opts": opts}],
        provider_opts=script(*steps),
        **options,
    )
    return fleet, session


def _acts(hook: str, **action: Any) -> dict[str, Any]:
    return {"actions": {hook: action}}


async def test_before_prompt_intervene_replaces_the_prompt(harness_factory: Any) -> None:
    fleet, session = await _session(
        harness_factory, _acts("before_prompt", kind="intervene", prompt="rewritten"), {"text": "a"}
    )
    await session.prompt("original")
    await until_end(session)
    assert (await fleet.history(session.sid))[0]["content"] == "rewritten"


async def test_before_prompt_abort_rejects_the_prompt(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory, _acts("before_prompt", kind="abort", reason="audit"), {"text": "a"}
    )
    await session.prompt("no")
    rejected = (await until(session, "prompt_rejected"))[-1].data
    assert rejected == {"text": "no", "reason": "plugin: audit"}


async def test_after_response_abort_ends_the_turn_with_agent_abort(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory, _acts("after_response", kind="abort", reason="budget"), {"text": "a"}
    )
    await session.prompt("go")
    events = await until_end(session)
    assert events[-1].type == "agent_abort" and events[-1].data["reason"] == "plugin: budget"


async def test_before_tool_replace_args_changes_what_runs(harness_factory: Any) -> None:
    args = {"path": "safe.txt", "content": "replaced"}
    _, session = await _session(
        harness_factory,
        _acts("before_tool", kind="replace_tool_args", args=args),
        {"tool_calls": [call("write_file", path="danger.txt", content="x")]},
        {"text": "done"},
        tools=["write_file"],
    )
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "tool_execution_start")[0]["args"] == args


async def test_before_tool_block_reports_tool_blocked(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory,
        _acts("before_tool", kind="block_tool", reason="no writes"),
        {"tool_calls": [call("write_file", path="a", content="x")]},
        {"text": "done"},
        tools=["write_file"],
    )
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "tool_blocked")[0]["reason"] == "no writes"
    assert not of_type(events, "tool_execution_start")


async def test_before_finish_intervene_runs_another_step(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory,
        _acts("before_finish", kind="intervene", prompt="review it"),
        {"text": "draft"},
        {"text": "reviewed"},
    )
    await session.prompt("go")
    events = await until_end(session)
    assert events[-1].data["last_message"]["content"] == "reviewed"


async def test_before_request_switch_model_applies_to_that_request(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory,
        _acts("before_request", kind="switch_model", model="mock:echo"),
        {"text": "x"},
    )
    await session.prompt("hi")
    events = await until_end(session)
    assert of_type(events, "model_switched")[0]["to"] == "mock:echo"
    assert events[-1].data["last_message"]["content"] == "echo: hi"


async def test_emit_is_published_as_a_plugin_event(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory,
        _acts("after_turn", kind="emit", type="audit", data={"n": 1}),
        {"text": "x"},
    )
    await session.prompt("go")
    event = (await until(session, "plugin_event"))[-1].data
    assert event == {"plugin": "scripted", "kind": "audit", "payload": {"n": 1}}


async def test_a_forbidden_action_is_refused_with_an_error_and_the_turn_goes_on(
    harness_factory: Any,
) -> None:
    _, session = await _session(
        harness_factory, _acts("after_response", kind="block_tool", reason="x"), {"text": "fine"}
    )
    await session.prompt("go")
    events = await until_end(session)
    error = of_type(events, "error")[0]
    assert error["code"] == "plugin_action_not_allowed"
    assert "block_tool" in error["message"] and "after_response" in error["message"]
    assert events[-1].data["last_message"]["content"] == "fine"


async def test_a_crashing_plugin_is_contained(harness_factory: Any) -> None:
    _, session = await _session(harness_factory, {"crash_on": ["before_request"]}, {"text": "ok"})
    await session.prompt("go")
    events = await until_end(session)
    crash = of_type(events, "plugin_event")[0]
    assert crash["plugin"] == "scripted" and crash["kind"] == "crash"
    assert events[-1].data["reason"] == "finished"


async def test_a_crash_at_before_tool_blocks_the_call(harness_factory: Any) -> None:
    _, session = await _session(
        harness_factory,
        {"crash_on": ["before_tool"]},
        {"tool_calls": [call("write_file", path="a", content="x")]},
        {"text": "done"},
        tools=["write_file"],
    )
    await session.prompt("go")
    events = await until_end(session)
    assert "scripted failed" in of_type(events, "tool_blocked")[0]["reason"]


async def test_security_guard_blocks_a_dangerous_command(harness_factory: Any) -> None:
    fleet = await (await harness_factory(shell_enabled=True)).start_fleet("w1")
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script",
        tools=["shell"],
        plugins=["CMDC.Plugin.Builtin.SecurityGuard"],
        provider_opts=script({"tool_calls": [call("shell", command="rm -rf /")]}, {"text": "ok"}),
    )
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "tool_blocked")[0]["name"] == "shell"
    assert not of_type(events, "tool_execution_start")


async def test_plugin_state_survives_hibernation(harness_factory: Any) -> None:
    fleet, session = await _session(
        harness_factory,
        _acts("before_prompt", kind="intervene", prompt="once only"),
        {"text": "a"},
        {"text": "b"},
    )
    await session.prompt("first")
    await until_end(session)
    await session.hibernate()
    await until(session, "session_hibernated")
    await session.prompt("second")
    await until_end(session)
    contents = [m["content"] for m in await fleet.history(session.sid) if m["role"] == "user"]
    assert contents == ["once only", "second"]
