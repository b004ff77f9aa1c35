"""The built-in plugins of catalog A on a real fleet: model_router, cost_guard, skill_guard,
reflection, planning, patch_tool_calls, each acting on a `mock:script` session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flotilla import Session
from schemas import new_session_id
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end
from workers.plugins._planning import EXECUTE, PLAN_REQUEST

WRITE = call("write_file", path="a.txt", content="x")
DOLLAR = {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}
"""With PRICE, a step that costs $1."""
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 0.0}


async def _session(fleet: Harness, plugins: list[Any], *steps: Any, **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault("provider_opts", script(*steps))
    return await fleet.fleet.create_agent(model="mock:script", plugins=plugins, **options)


def _plugin_events(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in of_type(events, "plugin_event") if e["kind"] == kind]


async def test_model_router_switches_the_model_of_the_request(fleet: Harness) -> None:
    router = {
        "name": "model_router",
        "opts": {"rules": [{"condition": ["user_tier", "free"], "model": "mock:echo"}]},
    }
    session = await _session(fleet, [router], {"text": "scripted"}, user_data={"user_tier": "free"})
    await session.prompt("hi")
    events = await until_end(session)
    switched = of_type(events, "model_switched")
    assert switched == [
        {
            "from": "mock:script",
            "to": "mock:echo",
            "provider_opts_changed": False,
            "reason": "plugin",
        }
    ]
    assert events[-1].data["last_message"]["content"] == "echo: hi"


async def test_cost_guard_aborts_past_max_usd(fleet: Harness) -> None:
    guard = {"name": "cost_guard", "opts": {"max_usd": 0.5}}
    steps = script({"tool_calls": [WRITE], **DOLLAR}, {"text": "unreached"}, price=PRICE)
    session = await _session(fleet, [guard], tools=["write_file"], provider_opts=steps)
    await session.prompt("spend")
    events = await until_end(session)
    assert events[-1].type == "agent_abort"
    assert events[-1].data["reason"] == "plugin: cost limit reached: $1.0000 of $0.5000"
    assert len(of_type(events, "llm_call")) == 1, "no request past the limit"


async def test_cost_guard_warns_once_and_a_hot_update_keeps_its_state(fleet: Harness) -> None:
    guard = {"name": "cost_guard", "opts": {"max_usd": 1.5, "soft_warning_pct": 0.5}}
    steps = script(
        {"tool_calls": [WRITE], **DOLLAR}, {"text": "one", **DOLLAR}, {"text": "two"}, price=PRICE
    )
    session = await _session(fleet, [guard], tools=["write_file"], provider_opts=steps)
    await session.prompt("spend")
    events = await until_end(session)
    (warning,) = of_type(events, "cost_warning")  # the catalog event, on the monitor channel
    assert (warning["plugin"], warning["accrued_usd"], warning["max_usd"]) == (
        "cost_guard",
        1.0,
        1.5,
    )
    assert not _plugin_events(events, "cost_warning")
    await session.update_plugin_opts("cost_guard", {"max_usd": 10.0})
    updated = (await until(session, "plugin_opts_updated"))[-1].data
    assert (updated["success"], updated["mode"]) == (True, "callback")
    await session.prompt("more")
    later = await until_end(session)
    assert later[-1].type == "agent_end", "$2 spent is below the new $10 limit"
    state = (await fleet.state(session.sid))["plugin_states"]["cost_guard"]
    assert (round(state["accrued_usd"], 2), state["warnings_sent"]) == (2.0, 1)


async def test_skill_guard_enforces_the_skills_found_in_the_workspace(
    harness_factory: Any, tmp_path: Path
) -> None:
    harness = await harness_factory(workspace_backend="dir", data_dir=tmp_path / "data")
    fleet = await harness.start_fleet("w1")
    sid = new_session_id()
    skill = tmp_path / "data" / "workspaces" / "acme" / sid / ".flotilla/skills/reading/SKILL.md"
    skill.parent.mkdir(parents=True)
    skill.write_text("---\nname: reading\nallowed_tools:\n  - read_file\n---\nRead only.\n")
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        session_id=sid,
        model="mock:script",
        tools=["write_file", "read_file"],
        plugins=["CMDC.Plugin.Builtin.SkillGuard"],
        provider_opts=script({"tool_calls": [WRITE]}, {"text": "done"}),
    )
    await session.prompt("write")
    events = await until_end(session)
    (blocked,) = of_type(events, "tool_blocked")
    assert (
        blocked["reason"]
        == "tool 'write_file' is not allowed by the active skills; allowed: read_file"
    )
    assert not of_type(events, "tool_execution_start")


async def test_reflection_reviews_the_answer_before_the_turn_ends(fleet: Harness) -> None:
    reflection = {"name": "reflection", "opts": {"criteria": ["accuracy"]}}
    session = await _session(fleet, [reflection], {"text": "draft"}, {"text": "APPROVED: final"})
    await session.prompt("answer")
    events = await until_end(session)
    assert _plugin_events(events, "reflection_approved") == [
        {"critique": "APPROVED: final", "iteration": 1, "forced": False}
    ]
    assert events[-1].data["last_message"]["content"] == "APPROVED: final"
    review = (await fleet.history(session.sid))[2]
    assert review["role"] == "user" and "- accuracy" in review["content"]


async def test_planning_asks_for_a_plan_and_keeps_it_in_the_system_prompt(
    fleet: Harness,
) -> None:
    session = await _session(fleet, ["planning"], {"text": "1. look\n2. answer"}, {"text": "done"})
    await session.prompt("Refactor the billing module and test it")
    events = await until_end(session)
    assert _plugin_events(events, "plan_generated") == [
        {"steps": ["look", "answer"], "attempts": 1, "source": "answer"}
    ]
    history = await fleet.history(session.sid)
    assert [m["content"] for m in history if m["role"] == "user"][1:] == [PLAN_REQUEST, EXECUTE]
    state = await fleet.state(session.sid)
    assert state["system_context"]["plan"] == "Plan:\n1. look\n2. answer"


async def test_patch_tool_calls_answers_a_dangling_call_from_create(fleet: Harness) -> None:
    messages = [
        {"role": "user", "content": "list it"},
        {
            "role": "assistant",
            "tool_calls": [{"call_id": "old1", "name": "shell", "arguments": {}}],
        },
    ]
    session = await _session(fleet, ["patch_tool_calls"], {"text": "ok"}, messages=messages)
    await session.prompt("go on")
    events = await until_end(session)
    assert _plugin_events(events, "tool_calls_patched")[0]["count"] == 1
    history = await fleet.history(session.sid)
    assert [m["role"] for m in history] == ["user", "assistant", "tool_result", "user", "assistant"]
    assert (history[2]["call_id"], history[2]["is_error"]) == ("old1", True)
