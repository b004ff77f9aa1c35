"""Commands against a busy or waiting session, and the engine's own step-boundary work:
steering around approvals, approval timeouts, compaction, todos, loop detection, tool retries,
blueprints."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import CommandError, Session
from flotilla.errors import ConfigurationError
from flotilla.keys import RedisKeys
from schemas import approval_timeout
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end
from tests.workers.engine_tools import CUSTOM_TOOLS
from workers._sessions import Blueprints

PLUGIN = "tests.workers.scripted_plugin:ScriptedPlugin"
WRITE = call("write_file", path="a.txt", content="x")
SLOW = {"text": "a slow answer streaming in many small pieces", "chunk_delay_ms": 40}


@pytest.fixture
async def tools_fleet(harness_factory: Any) -> Harness:
    """A fleet whose workers carry the test tools `flaky` and `wait`, and a blueprint."""
    harness = await harness_factory(
        custom_tools=CUSTOM_TOOLS,
        custom_plugins=(PLUGIN,),
        blueprints=("reviewer=tests.workers.engine_tools:REVIEWER",),
    )
    return await harness.start_fleet("w1")


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault("model", "mock:script")
    return await fleet.fleet.create_agent(provider_opts=script(*steps), **options)


def _approving(*tools: str, **opts: Any) -> list[dict[str, Any]]:
    return [{"name": "human_approval", "opts": {"tools": list(tools), **opts}}]


# -- switch_model and checkpoint while busy ---------------------------------------------------
async def test_switch_model_while_a_tool_runs_applies_to_the_next_request(
    tools_fleet: Harness,
) -> None:
    session = await _session(
        tools_fleet, {"tool_calls": [call("wait", ms=300)]}, {"text": "never"}, tools=["wait"]
    )
    await session.prompt("go")
    await until(session, "tool_execution_start")
    await session.switch_model("mock:echo")
    events = await until_end(session)
    assert of_type(events, "model_switched")[0]["to"] == "mock:echo"
    assert [e["model"] for e in of_type(events, "llm_call")] == ["mock:echo"]
    assert events[-1].data["last_message"]["content"] == "echo: go"


async def test_a_checkpoint_while_busy_keeps_only_complete_exchanges(tools_fleet: Harness) -> None:
    assert tools_fleet.fleet is not None
    session = await _session(
        tools_fleet,
        {"text": "first answer"},
        {"tool_calls": [call("wait", ms=300)]},
        {"text": "second answer"},
        tools=["wait"],
    )
    await session.prompt("first")
    await until_end(session)
    await session.prompt("second")
    await until(session, "tool_execution_start")
    command_id = await session.send("checkpoint", label="mid-turn")
    events = await until_end(session)
    saved = next(e for e in events if e.type == "checkpoint_saved")
    assert saved.request_id == command_id and saved.data["label"] == "mid-turn"
    assert events.index(saved) < len(events) - 1, "saved while the turn still ran"
    restored = await tools_fleet.fleet.create_agent(
        model="mock:echo",
        from_checkpoint={"session_id": session.sid, "checkpoint_id": saved.data["checkpoint_id"]},
    )
    await restored.prompt("third")
    await until_end(restored)
    history = await tools_fleet.history(restored.sid)
    # the call that was running has no result in the copy, so it is not in it either
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "first"),
        ("assistant", "first answer"),
        ("user", "second"),
        ("user", "third"),
        ("assistant", "echo: third"),
    ]


# -- steering around tools and approvals ------------------------------------------------------
async def test_steering_kills_a_running_tool_that_is_not_immune(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("wait", ms=20_000)]},
        {"text": "redirected"},
        tools=["wait"],
    )
    await session.prompt("go")
    await until(session, "tool_execution_start")
    await session.steer("stop waiting", ref="s1")
    events = await until_end(session, timeout=5)
    assert of_type(events, "tool_skipped_for_steering") == [
        {
            "name": "wait",
            "call_id": of_type(events, "tool_execution_end")[0]["call_id"],
            "reason": "killed_by_steering",
        }
    ]
    assert of_type(events, "steering_applied") == [{"refs": ["s1"], "count": 1}]
    history = await tools_fleet.history(session.sid)
    roles = [(m["role"], m.get("is_error")) for m in history]
    assert roles == [
        ("user", None),
        ("assistant", None),
        ("tool_result", True),
        ("user", None),
        ("assistant", None),
    ]
    assert history[3]["content"] == "stop waiting"


async def test_steering_lets_an_immune_tool_finish(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("wait", ms=300)]},
        {"text": "after"},
        tools=["wait"],
        interrupt_immune_tools=["wait"],
    )
    await session.prompt("go")
    await until(session, "tool_execution_start")
    await session.steer("and then this", ref="s1")
    events = await until_end(session)
    assert not of_type(events, "tool_skipped_for_steering")
    assert of_type(events, "tool_execution_end")[0]["result"] == "waited 300 ms"
    assert of_type(events, "steering_applied") == [{"refs": ["s1"], "count": 1}]


async def test_steering_during_the_final_answer_gets_another_step(fleet: Harness) -> None:
    session = await _session(fleet, SLOW, {"text": "steered answer"})
    await session.prompt("go")
    await until(session, "message_delta")
    await session.steer("shorter please", ref="s1")
    events = await until_end(session)
    assert of_type(events, "steering_applied") == [{"refs": ["s1"], "count": 1}]
    assert events[-1].data["last_message"]["content"] == "steered answer"
    assert len(of_type(events, "llm_call")) == 2


async def test_steer_while_awaiting_approval_skips_calls_not_started(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [WRITE, call("wait", ms=10)]},
        {"text": "done"},
        tools=["write_file", "wait"],
        plugins=_approving("write_file", "wait"),
    )
    await session.prompt("go")
    first = (await until(session, "approval_required"))[-1].data
    second = (await until(session, "approval_required"))[-1].data
    await session.steer("only write the file", ref="s1")
    assert (await until(session, "steering_received"))[-1].data["status"] == "queued"
    await session.approve(first["approval_id"])
    await session.approve(second["approval_id"])
    events = await until_end(session)
    # write_file is immune to steering and runs; the `wait` call had not started: skipped
    ended = {e["name"]: e["status"] for e in of_type(events, "tool_execution_end")}
    assert ended == {"write_file": "ok"}
    assert of_type(events, "tool_skipped_for_steering")[0]["reason"] == "pending_dispatch"
    assert of_type(events, "steering_applied") == [{"refs": ["s1"], "count": 1}]
    history = await tools_fleet.history(session.sid)
    assert [m["role"] for m in history] == [
        "user",
        "assistant",
        "tool_result",
        "tool_result",
        "user",
        "assistant",
    ]


async def test_steering_left_when_a_rejection_ends_the_turn_starts_the_next(
    fleet: Harness,
) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "as steered"},
        tools=["write_file"],
        plugins=_approving("write_file"),
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    await session.steer("do something else", ref="s1")
    await until(session, "steering_received")
    await session.reject(asked["approval_id"])
    first = await until_end(session)
    assert first[-1].data["reason"] == "rejected"
    second = await until_end(session)
    assert of_type(second, "steering_applied") == [{"refs": ["s1"], "count": 1}]
    assert second[-1].data["last_message"]["content"] == "as steered"
    history = await fleet.history(session.sid)
    assert {"role": "user", "content": "do something else"} in history


# -- abort, hibernate and stop while waiting --------------------------------------------------
async def test_abort_while_awaiting_approval_drops_the_approval(fleet: Harness) -> None:
    session = await _session(
        fleet, {"tool_calls": [WRITE]}, tools=["write_file"], plugins=_approving("write_file")
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    await session.abort(reason="not now")
    events = await until(session, "agent_abort")
    assert events[-1].data == {"reason": "not now"}
    command_id = await session.approve(asked["approval_id"])
    error = (await until(session, "error"))[-1]
    assert error.data["code"] == "not_found" and error.request_id == command_id
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and results[0]["content"].startswith("aborted")


async def test_abort_by_default_lets_an_immune_tool_finish_unrecorded(
    tools_fleet: Harness,
) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("wait", ms=300)]},
        {"text": "next turn"},
        tools=["wait"],
        interrupt_immune_tools=["wait"],
    )
    await session.prompt("go")
    started = (await until(session, "tool_execution_start"))[-1].data
    await session.abort()
    events = await until(session, "agent_abort")
    # the call runs on; its end closes the start clients saw, after the turn's end
    events += await until(session, "tool_execution_end")
    assert not of_type(events, "tool_killed")
    end = of_type(events, "tool_execution_end")[0]
    assert (end["call_id"], end["status"]) == (started["call_id"], "ok")
    await session.prompt("again")
    events += await until_end(session)
    assert events[-1].data["last_message"]["content"] == "next turn"
    history = await tools_fleet.history(session.sid)  # its result reached no history:
    results = [m["content"] for m in history if m.get("call_id") == started["call_id"]]
    assert results == ["aborted: user_cancelled"]  # the abort's placeholder stands
    assert end["result"] not in results


async def test_a_session_hibernated_while_awaiting_approval_resumes_on_approve(
    fleet: Harness,
) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "written"},
        tools=["write_file"],
        plugins=_approving("write_file"),
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    await session.hibernate()
    await until(session, "session_hibernated")
    await session.approve(asked["approval_id"])
    events = await until_end(session)
    assert of_type(events, "session_resumed")
    assert of_type(events, "tool_execution_end")[0]["status"] == "ok"
    assert events[-1].data["last_message"]["content"] == "written"


async def test_stop_while_a_tool_runs_ends_the_turn_and_the_session(tools_fleet: Harness) -> None:
    session = await _session(tools_fleet, {"tool_calls": [call("wait", ms=20_000)]}, tools=["wait"])
    await session.prompt("go")
    await until(session, "tool_execution_start")
    command_id = await session.send("stop")
    events = await until(session, "session_stopped", timeout=5)
    assert of_type(events, "agent_abort") == [{"reason": "stopped"}]
    assert events[-1].request_id == command_id
    assert await tools_fleet.history(session.sid) == []


# -- approval timeout -------------------------------------------------------------------------
async def test_an_unanswered_approval_times_out_and_the_llm_is_told(fleet: Harness) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "understood"},
        tools=["write_file", "read_file"],
        plugins=_approving("write_file", timeout_ms=200),
    )
    await session.prompt("go")
    events = await until_end(session)
    resolved = of_type(events, "approval_resolved")
    assert [(r["status"], r["kind"]) for r in resolved] == [("rejected", "timeout")]
    assert of_type(events, "agent_resumed")[0]["trigger"] == "tool_approval_timeout"
    assert events[-1].data["reason"] == "finished"
    results = [m for m in await fleet.history(session.sid) if m["role"] == "tool_result"]
    assert results[0]["is_error"] and results[0]["content"].startswith("not approved in time")
    assert not of_type(events, "tool_execution_start"), "the call never ran"


async def test_an_approval_of_a_hibernated_session_still_times_out(fleet: Harness) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "understood"},
        tools=["write_file"],
        plugins=_approving("write_file", timeout_ms=1500),
    )
    await session.prompt("go")
    await until(session, "approval_required")
    await session.hibernate()  # no worker holds it now: no timer runs
    await until(session, "session_hibernated")
    events = await until_end(session, timeout=10)  # and no command is sent to wake it
    resolved = of_type(events, "approval_resolved")
    assert [(r["status"], r["kind"]) for r in resolved] == [("rejected", "timeout")]
    assert events[-1].data["last_message"]["content"] == "understood"
    keys = RedisKeys(fleet.settings.redis_prefix)
    assert await fleet.scheduled(keys.approval_timeouts, session.sid) is None


async def test_an_approval_answered_in_time_leaves_no_timeout_behind(fleet: Harness) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "written"},
        tools=["write_file"],
        plugins=_approving("write_file", timeout_ms=600),
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    keys = RedisKeys(fleet.settings.redis_prefix)
    assert await fleet.scheduled(keys.approval_timeouts, session.sid) is not None
    await session.approve(asked["approval_id"])
    events = await until_end(session)
    assert await fleet.scheduled(keys.approval_timeouts, session.sid) is None
    assert [r["status"] for r in of_type(events, "approval_resolved")] == ["approved"]
    # a timeout arriving late anyway (a timer that fired before the approval) is moot
    body, _ = approval_timeout("acme", session.sid, asked["approval_id"])
    late = await session.send("reject", **{k: v for k, v in body.items() if k != "op"})
    await session.prompt("again")
    events = await until_end(session)
    assert not [e for e in events if e.type == "error" and e.request_id == late]
    assert await fleet.history(session.sid)  # the session carried on


# -- compaction -------------------------------------------------------------------------------
async def test_the_compactor_summarises_older_messages_once_the_prompt_is_large(
    fleet: Harness,
) -> None:
    session = await _session(
        fleet, model="mock:echo", compactor={"trigger_tokens": 5, "keep_messages": 2}
    )
    for text in ("one", "two", "three"):
        await session.prompt(text)
        events = await until_end(session)
    # the second turn's request was over the trigger, but keeping 2 messages left nothing
    # before a user message to cut; the third cuts before "two" (a kept tail starts there)
    assert of_type(events, "compact_start") == [{}]
    assert of_type(events, "compact_end") == [{"removed_count": 2}]
    history = await fleet.history(session.sid)
    assert history[0]["content"] == (
        "[Summary of 2 earlier messages, compacted: threshold]\n- user: one\n- assistant: echo: one"
    )
    assert [m["content"] for m in history[1:]] == ["two", "echo: two", "three", "echo: three"]


async def test_compact_conversation_compacts_before_the_next_request(fleet: Harness) -> None:
    earlier = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
        for i in range(10)
    ]
    session = await _session(
        fleet,
        {"tool_calls": [call("compact_conversation", reason="too long")]},
        {"text": "lighter now"},
        tools=["compact_conversation"],
        messages=earlier,
    )
    await session.prompt("go on")
    events = await until_end(session)
    # without a compactor option the last 6 messages are kept, from a user message on
    assert of_type(events, "compact_end") == [{"removed_count": 6}]
    history = await fleet.history(session.sid)
    assert history[0]["content"].startswith("[Summary of 6 earlier messages, compacted: too long]")
    assert [m["content"] for m in history[1:5]] == [f"message {i}" for i in range(6, 10)]
    assert history[-1]["content"] == "lighter now"


# -- todos and loops --------------------------------------------------------------------------
async def test_write_todos_publishes_the_list_and_keeps_it(fleet: Harness) -> None:
    todos = [
        {"id": "1", "content": "read", "status": "completed"},
        {"id": "2", "content": "write", "status": "in_progress"},
    ]
    session = await _session(
        fleet,
        {"tool_calls": [call("write_todos", todos=todos)]},
        {"text": "ok"},
        tools=["write_todos"],
    )
    await session.prompt("plan")
    events = await until_end(session)
    assert of_type(events, "todo_change") == [{"todos": todos}]
    state = await fleet.state(session.sid)
    assert state["todos"] == todos


async def test_the_same_calls_three_times_in_a_row_are_a_loop(fleet: Harness) -> None:
    same = {"tool_calls": [call("list_dir", path=".")]}
    session = await _session(fleet, same, same, same, {"text": "stop"}, tools=["list_dir"])
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "loop_detected") == [
        {"type": "repeated_tool_calls", "tools": ["list_dir"]}
    ]


# -- tool retries -----------------------------------------------------------------------------
async def test_a_failing_tool_is_retried_until_it_succeeds(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("flaky", succeed_on=3)]},
        {"text": "ok"},
        tools=["flaky"],
        tool_max_retries=2,
        tool_retry_delay_ms=10,
    )
    await session.prompt("go")
    events = await until_end(session)
    ended = of_type(events, "tool_execution_end")
    assert [(e["status"], e["result"]) for e in ended] == [("ok", "succeeded on attempt 3")]


async def test_retries_stop_at_the_limit_with_the_last_error(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("flaky", succeed_on=5)]},
        {"text": "ok"},
        tools=["flaky"],
        tool_max_retries=1,
        tool_retry_delay_ms=0,
    )
    await session.prompt("go")
    events = await until_end(session)
    ended = of_type(events, "tool_execution_end")[0]
    assert (ended["status"], ended["result"]) == ("error", "attempt 2 failed")


async def test_on_tool_error_skip_stops_the_retries(tools_fleet: Harness) -> None:
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("flaky", succeed_on=3)]},
        {"text": "ok"},
        tools=["flaky"],
        tool_max_retries=5,
        tool_retry_delay_ms=0,
        plugins=[{"name": "scripted", "opts": {"actions": {"on_tool_error": {"kind": "skip"}}}}],
    )
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "tool_execution_end")[0]["result"] == "attempt 1 failed"


async def test_on_tool_error_abort_ends_the_turn(tools_fleet: Harness) -> None:
    opts = {"actions": {"on_tool_error": {"kind": "abort", "reason": "tool broken"}}}
    session = await _session(
        tools_fleet,
        {"tool_calls": [call("flaky", succeed_on=3)]},
        {"text": "never"},
        tools=["flaky"],
        tool_max_retries=5,
        plugins=[{"name": "scripted", "opts": opts}],
    )
    await session.prompt("go")
    events = await until_end(session)
    assert events[-1].type == "agent_abort"
    assert events[-1].data == {"reason": "plugin: tool broken"}


# -- blueprints -------------------------------------------------------------------------------
async def test_a_blueprint_gives_defaults_that_explicit_options_override(
    tools_fleet: Harness,
) -> None:
    assert tools_fleet.fleet is not None
    session = await tools_fleet.fleet.create_agent(
        model="mock:echo", blueprint="reviewer", max_turns=3
    )
    state = await tools_fleet.state(session.sid)
    options = state["options"]
    assert options["system_prompt"] == "You review code."
    assert options["tools"] == ["read_file", "wait"] and state["tools"] == ["read_file", "wait"]
    assert options["user_data"] == {"team": "review"}
    assert options["max_turns"] == 3


async def test_an_unknown_blueprint_is_refused(tools_fleet: Harness) -> None:
    assert tools_fleet.fleet is not None
    with pytest.raises(CommandError) as refused:
        await tools_fleet.fleet.create_agent(model="mock:echo", blueprint="nobody")
    assert refused.value.code == "invalid_command"


def test_a_blueprint_with_invalid_options_stops_the_worker_at_start() -> None:
    with pytest.raises(ConfigurationError, match="max_turns"):
        Blueprints(("bad=tests.workers.test_engine_states:BAD_BLUEPRINT",))
    with pytest.raises(ConfigurationError, match=r"must be 'name=package\.module:attr'"):
        Blueprints(("no-path",))


BAD_BLUEPRINT = {"max_turns": 0}
