"""A session created from a checkpoint: plugins start afresh and see the copy's workspace
(CMDC rebuilds plugin state at session_start); skills found under `skills_dirs`."""

from __future__ import annotations

from typing import Any

from flotilla import Session
from flotilla.keys import RedisKeys
from schemas import SessionState
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end
from workers._prompting import system_prompt

DOLLAR = {"usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}
PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 0.0}
GUARD = [{"name": "cost_guard", "opts": {"max_usd": 1.5}}]
SKILL = "---\nname: reading\ndescription: read, never write\nallowed_tools:\n  - read_file\n---\n"
SKILL_PATH = ".flotilla/skills/reading/SKILL.md"


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault("provider_opts", script(*steps, price=PRICE))
    return await fleet.fleet.create_agent(model="mock:script", **options)


async def _checkpoint_of(fleet: Harness, session: Session) -> dict[str, str]:
    return {"session_id": session.sid, "checkpoint_id": await session.checkpoint()}


async def test_a_copy_does_not_inherit_what_the_originals_plugins_accrued(fleet: Harness) -> None:
    original = await _session(fleet, {"text": "one", **DOLLAR}, plugins=GUARD)
    await original.prompt("spend")
    await until_end(original)
    ref = await _checkpoint_of(fleet, original)
    copy = await _session(fleet, {"text": "two", **DOLLAR}, plugins=GUARD, from_checkpoint=ref)
    fresh = await fleet.state(copy.sid)
    assert fresh["plugin_states"]["cost_guard"]["accrued_usd"] == 0.0
    assert fresh["usage"]["cost_usd"] == 0.0 and fresh["turns"] == 0
    await copy.prompt("spend again")
    assert (await until_end(copy))[-1].data["reason"] == "finished", "$1 of its own < $1.5"
    key = RedisKeys(fleet.settings.redis_prefix).checkpoint(
        "acme", original.sid, ref["checkpoint_id"]
    )
    saved = await fleet.redis.hget(key, "d")
    assert saved is not None and b"accrued_usd" not in saved


async def test_hibernation_keeps_what_the_plugins_accrued(fleet: Harness) -> None:
    session = await _session(
        fleet, {"text": "one", **DOLLAR}, {"text": "two", **DOLLAR}, plugins=GUARD
    )
    await session.prompt("spend")
    await until_end(session)
    await session.hibernate()
    await until(session, "session_hibernated")
    await session.prompt("spend again")
    events = await until_end(session)
    assert events[-1].type == "agent_abort", "$2 with the first turn's $1 > $1.5"
    assert (await fleet.state(session.sid))["plugin_states"]["cost_guard"]["accrued_usd"] == 2.0


async def _with_skill(fleet: Harness) -> dict[str, str]:
    """A checkpoint whose workspace holds a SKILL.md allowing only read_file."""
    writer = await _session(
        fleet,
        {"tool_calls": [call("write_file", path=SKILL_PATH, content=SKILL)]},
        {"text": "saved"},
        tools=["write_file"],
    )
    await writer.prompt("write the skill")
    await until_end(writer)
    return await _checkpoint_of(fleet, writer)


async def test_skill_guard_enforces_the_skills_of_a_restored_checkpoint(fleet: Harness) -> None:
    ref = await _with_skill(fleet)
    copy = await _session(
        fleet,
        {"tool_calls": [call("write_file", path="x.txt", content="no")]},
        {"tool_calls": [call("read_file", path=SKILL_PATH)]},
        {"text": "done"},
        tools=["write_file", "read_file"],
        plugins=["skill_guard"],
        from_checkpoint=ref,
    )
    await copy.prompt("go")
    events = await until_end(copy)
    (blocked,) = of_type(events, "tool_blocked")
    assert blocked["name"] == "write_file" and "allowed: read_file" in blocked["reason"]
    ends = of_type(events, "tool_execution_end")
    assert [(e["name"], e["status"]) for e in ends] == [("read_file", "ok")]


async def test_skills_dirs_lists_the_skills_found_in_the_system_prompt(fleet: Harness) -> None:
    ref = await _with_skill(fleet)
    copy = await _session(
        fleet, {"text": "x"}, skills_dirs=[".flotilla/skills"], from_checkpoint=ref
    )
    state = SessionState.model_validate(await fleet.state(copy.sid))
    assert [(s["name"], s["description"]) for s in state.skills] == [
        ("reading", "read, never write")
    ]
    assert f"- reading: read, never write ({SKILL_PATH})" in system_prompt(state, [])
    task = state.model_copy(
        update={"options": state.options.model_copy(update={"prompt_mode": "task"})}
    )
    assert "reading" not in system_prompt(task, [])
