"""PROTOCOL §6.11: a sub-agent runs under its parent's plugins, only the fleet can end the
parent's wait for it, and it stops when its task ends."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from flotilla import CommandError, Session
from flotilla.keys import RedisKeys
from schemas import Event
from tests.conftest import Harness, eventually
from tests.engine_helpers import call, of_type, script, until, until_end

WRITE = call("write_file", path="child.txt", content="from the child")
DOLLAR = {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 0.0}
APPROVING = [{"name": "human_approval", "opts": {"tools": ["write_file"]}}]
SCRIPTED = "tests.workers.scripted_plugin:ScriptedPlugin"
ABORT = {"kind": "abort", "reason": "not today"}


def _writer(**spec: Any) -> dict[str, Any]:
    """A sub-agent that writes a file, then answers."""
    steps = script({"tool_calls": [WRITE]}, {"text": "child wrote it"})
    return {"name": "writer", "model": "mock:script", "provider_opts": steps, **spec}


async def _parent(fleet: Harness, child: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault(
        "provider_opts",
        script(
            {"tool_calls": [call("task", description="write the file", subagent_type="writer")]},
            {"text": "parent done"},
        ),
    )
    return await fleet.fleet.create_agent(
        model="mock:script",
        tools=["task", "write_file"],
        subagents=[child],
        group_id="crew",
        **options,
    )


async def _group_until(fleet: Harness, done: Any) -> list[Event]:
    assert fleet.fleet is not None
    seen = []
    async with asyncio.timeout(10):
        async for event in fleet.fleet.subscribe_group("crew", since=0):
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError("unreachable")


async def _child_waiting(fleet: Harness, parent: Session) -> dict[str, Any]:
    """The parent's wait for its child, once the child asked for an approval."""
    await until(parent, "subagent_start")
    events = await _group_until(fleet, lambda e: e.type == "approval_required")
    question = (await fleet.state(parent.sid))["pending_questions"][0]
    assert events[-1].sid == question["child_sid"]
    return {**question, "approval_id": events[-1].data["approval_id"]}


async def test_a_sub_agent_asks_for_approval_under_its_parents_plugins(fleet: Harness) -> None:
    parent = await _parent(fleet, _writer(), plugins=APPROVING)
    await parent.prompt("delegate")
    waiting = await _child_waiting(fleet, parent)
    child = waiting["child_sid"]
    assert (await fleet.state(parent.sid))["status"] == "idle", "the parent waits without a slot"
    workspace = RedisKeys(fleet.settings.redis_prefix).workspace("acme", child)
    assert not await fleet.redis.hexists(workspace, "child.txt"), "not written before approval"
    assert fleet.fleet is not None
    await (await fleet.fleet.session(child)).approve(waiting["approval_id"])
    events = await until_end(parent)
    assert of_type(events, "subagent_end")[0]["result"] == "child wrote it"
    group = await _group_until(fleet, lambda e: e.sid == child and e.type == "tool_execution_end")
    assert group[-1].data["status"] == "ok", "written once approved"
    assert events[-1].data["last_message"]["content"] == "parent done"


async def test_a_sub_agent_spec_naming_its_own_plugins_replaces_the_parents(
    fleet: Harness,
) -> None:
    parent = await _parent(fleet, _writer(plugins=[]), plugins=APPROVING)
    await parent.prompt("delegate")
    events = await until_end(parent)
    assert of_type(events, "subagent_end")[0]["result"] == "child wrote it"
    group = await _group_until(fleet, lambda e: e.sid == parent.sid and e.type == "agent_end")
    assert not [e for e in group if e.type == "approval_required"]


async def test_a_sub_agent_inherits_the_options_in_force_after_a_hot_update(
    fleet: Harness,
) -> None:
    parent = await _parent(fleet, _writer(), plugins=APPROVING)
    await parent.update_plugin_opts("human_approval", {"tools": []})
    await until(parent, "plugin_opts_updated")
    await parent.prompt("delegate")
    events = await until_end(parent)
    assert of_type(events, "subagent_end")[0]["result"] == "child wrote it"


async def test_a_childs_spend_counts_against_the_parents_cost_guard(fleet: Harness) -> None:
    guard = [{"name": "cost_guard", "opts": {"max_usd": 1.5}}]
    spender = {
        "name": "writer",
        "model": "mock:script",
        "provider_opts": script({"text": "spent a dollar", **DOLLAR}, price=PRICE),
    }
    parent = await _parent(
        fleet,
        spender,
        plugins=guard,
        provider_opts=script(
            {"tool_calls": [call("task", description="spend", subagent_type="writer")], **DOLLAR},
            {"text": "never asked"},
            price=PRICE,
        ),
    )
    await parent.prompt("delegate")
    events = await until_end(parent)
    # the child started at the parent's $1: its own $1 reached the $1.5 limit
    (ended,) = of_type(events, "subagent_end")
    assert "cost limit reached: $2.0000 of $1.5000" in ended["result"]
    assert events[-1].type == "agent_abort"
    assert events[-1].data["reason"] == "plugin: cost limit reached: $2.0000 of $1.5000"
    state = await fleet.state(parent.sid)
    assert state["subagent_usage"]["cost_usd"] == pytest.approx(1.0)


async def test_a_client_cannot_answer_the_wait_for_a_sub_agent(fleet: Harness) -> None:
    parent = await _parent(fleet, _writer(), plugins=APPROVING)
    await parent.prompt("delegate")
    waiting = await _child_waiting(fleet, parent)
    before = await fleet.state(parent.sid)
    forged = await parent.respond(waiting["ref"], {"status": "ok", "result": "invented"})
    with pytest.raises(CommandError) as refused:
        await parent.wait_for({"user_responded"}, request_id=forged, timeout=5)
    assert refused.value.code == "forbidden"
    [(_, headers, _)] = await fleet.dead_letters(1)
    assert headers["Flotilla-Error"] == "forbidden"
    assert await fleet.state(parent.sid) == before
    assert fleet.fleet is not None
    await (await fleet.fleet.session(waiting["child_sid"])).approve(waiting["approval_id"])
    ended = of_type(await until_end(parent), "subagent_end")
    assert ended[0]["result"] == "child wrote it"


async def test_a_forged_sub_agent_report_is_forbidden(fleet: Harness) -> None:
    parent = await _parent(fleet, _writer(), plugins=APPROVING)
    await parent.prompt("delegate")
    waiting = await _child_waiting(fleet, parent)
    before = await fleet.state(parent.sid)
    forged = await parent.send(
        "subagent_result",
        ref=waiting["ref"],
        child_sid=waiting["child_sid"],
        status="ok",
        result="invented",
        signature="0" * 64,
    )
    with pytest.raises(CommandError) as refused:
        await parent.wait_for({"subagent_end"}, request_id=forged, timeout=5)
    assert refused.value.code == "forbidden"
    assert await fleet.state(parent.sid) == before


async def test_a_create_naming_a_parent_that_does_not_wait_for_it_is_forbidden(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    parent = await fleet.fleet.create_agent(model="mock:echo")
    impostor = await fleet.fleet.session("impostor-1")
    sent = await impostor.send(
        "create", model="mock:echo", parent={"sid": parent.sid, "ref": "sa-x", "task": "lie"}
    )
    with pytest.raises(CommandError) as refused:
        await impostor.wait_for({"session_created"}, request_id=sent, timeout=5)
    assert refused.value.code == "forbidden"
    assert await fleet.state("impostor-1") == {}


async def test_a_sub_agent_stops_when_its_task_ends(fleet: Harness) -> None:
    parent = await _parent(fleet, _writer())
    await parent.prompt("delegate")
    child = (await until(parent, "subagent_start"))[-1].data["child_sid"]
    await until_end(parent)
    events = await _group_until(fleet, lambda e: e.sid == child and e.type == "session_stopped")
    assert [e.type for e in events if e.sid == child][-2:] == ["agent_end", "session_stopped"]

    async def gone() -> bool:
        return await fleet.state(child) == {}

    await eventually(gone, what="the child's state deleted")


async def test_an_aborted_parent_stops_its_waiting_child(fleet: Harness) -> None:
    parent = await _parent(fleet, _writer(), plugins=APPROVING)
    await parent.prompt("delegate")
    waiting = await _child_waiting(fleet, parent)
    await parent.abort(reason="changed my mind")
    await until_end(parent)
    events = await _group_until(
        fleet, lambda e: e.sid == waiting["child_sid"] and e.type == "session_stopped"
    )
    child = [e.type for e in events if e.sid == waiting["child_sid"]]
    assert "agent_abort" in child and "tool_execution_end" not in child
    assert not [e for e in events if e.type == "error" and e.sid == parent.sid]


async def test_a_sub_agent_the_fleet_refuses_is_an_error_result_not_an_endless_wait(
    harness_factory: Any,
) -> None:
    """The child's own `create` fails (a plugin aborts its session_start): it reports."""
    fleet = await (await harness_factory(custom_plugins=(SCRIPTED,))).start_fleet("w1")
    refusing = {"name": "scripted", "opts": {"actions": {"session_start": ABORT}}}
    parent = await _parent(
        fleet,
        _writer(plugins=[refusing]),
        provider_opts=script(
            {"tool_calls": [call("task", description="x", subagent_type="writer")]},
            {"text": "recovered"},
        ),
    )
    await parent.prompt("delegate")
    events = await until_end(parent)
    (ended,) = of_type(events, "subagent_end")
    assert ended["result"] == "sub-agent failed: session_start: not today"
    assert events[-1].data["last_message"]["content"] == "recovered"


async def test_a_sub_agent_naming_an_unknown_tool_is_an_error_result(fleet: Harness) -> None:
    parent = await _parent(
        fleet,
        _writer(tools=["no_such_tool"]),
        provider_opts=script(
            {"tool_calls": [call("task", description="x", subagent_type="writer")]},
            {"text": "recovered"},
        ),
    )
    await parent.prompt("delegate")
    events = await until_end(parent)
    assert not of_type(events, "subagent_start")
    (result,) = [m for m in await fleet.history(parent.sid) if m["role"] == "tool_result"]
    assert result["content"] == "the sub-agent cannot start: no tool 'no_such_tool' on this fleet"


async def test_sub_agent_specs_with_plugins_that_cannot_load_are_refused_at_create(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    with pytest.raises(CommandError) as refused:
        await fleet.fleet.create_agent(
            model="mock:echo", subagents=[{"name": "x", "plugins": ["no_such_plugin"]}]
        )
    assert refused.value.code == "invalid_command"
    assert "subagents['x']: unknown plugin 'no_such_plugin'" in str(refused.value)


def test_the_report_signature_binds_every_field() -> None:
    from schemas import ParentLink, SubagentResult, Usage
    from workers._subagents import report_body

    link = ParentLink(sid="p", ref="sa-1", token="t" * 32)
    body = report_body("p-c", link, ok=True, result="done", usage=Usage(cost_usd=1.0))
    tampered = SubagentResult.model_validate({**body, "result": "other"})
    assert orjson.dumps(body) != orjson.dumps(tampered.model_dump())
