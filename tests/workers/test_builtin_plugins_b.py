"""The PluginIO built-ins against a real fleet: memory files, auto checkpoints, the content
judge, the per-session offload budget, the event log and prompt caching."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from flotilla import Session
from flotilla.keys import RedisKeys
from tests.conftest import Harness, eventually
from tests.engine_helpers import call, of_type, script, until, until_end
from tests.openai_stub import OpenAIStub, Reply


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault("model", "mock:script")
    return await fleet.fleet.create_agent(provider_opts=script(*steps), **options)


async def _file(fleet: Harness, sid: str, path: str) -> str | None:
    """A workspace file of the session, read straight from Redis."""
    key = RedisKeys(fleet.settings.redis_prefix).workspace("acme", sid)
    data = await fleet.redis.hget(key, path)
    return data.decode() if data is not None else None


def _plugin_events(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in of_type(events, "plugin_event") if e["kind"] == kind]


# -- memory_loader / memory_flush -------------------------------------------------------------
async def test_memory_files_written_in_a_turn_reach_the_system_prompt_next_turn(
    fleet: Harness,
) -> None:
    note = call("write_file", path="AGENTS.md", content="Answer in French.")
    session = await _session(
        fleet,
        {"tool_calls": [note]},
        {"text": "noted"},
        {"text": "bonjour"},
        tools=["write_file"],
        plugins=["memory_loader"],
    )
    await session.prompt("save the rule")
    await until_end(session)
    assert "memory" not in (await fleet.state(session.sid))["system_context"]
    await session.prompt("hello")
    events = await until_end(session)
    memory = (await fleet.state(session.sid))["system_context"]["memory"]
    assert memory.endswith("## AGENTS.md\nAnswer in French.")
    loaded = _plugin_events(events, "memory_loaded")
    assert loaded == [{"files": ["AGENTS.md"], "chars": len(memory)}]


async def test_compaction_flushes_the_users_preferences_to_memory(fleet: Harness) -> None:
    session = await _session(
        fleet,
        model="mock:echo",
        compactor={"trigger_tokens": 5, "keep_messages": 2},
        plugins=[{"name": "memory_flush", "opts": {"max_facts_per_flush": 5}}],
    )
    for text in ("I prefer tabs over spaces, remember that.", "two", "three"):
        await session.prompt(text)
        events = await until_end(session)
    fact = "I prefer tabs over spaces, remember that."
    assert _plugin_events(events, "memory_flush") == [
        {"facts": [fact], "count": 1, "file": "MEMORY.md", "extractor": "heuristic"}
    ]
    assert of_type(events, "compact_end") == [{"removed_count": 2}]
    assert await _file(fleet, session.sid, "MEMORY.md") == f"# Memory\n\n- {fact}\n"


# -- auto_checkpoint ---------------------------------------------------------------------------
async def test_auto_checkpoint_saves_every_n_turns(fleet: Harness) -> None:
    plugin = {"name": "auto_checkpoint", "opts": {"every_n_turns": 2}}
    session = await _session(fleet, model="mock:echo", plugins=[plugin])
    await session.prompt("one")
    await until_end(session)
    await session.prompt("two")
    events = await until(session, "plugin_event")
    saved = of_type(events, "checkpoint_saved")
    assert [s["label"] for s in saved] == ["auto"]
    assert _plugin_events(events, "auto_checkpoint_saved") == [
        {"checkpoint_id": saved[0]["checkpoint_id"], "trigger": "every_n_turns"}
    ]


async def test_a_session_end_checkpoint_outlives_the_stopped_session(fleet: Harness) -> None:
    assert fleet.fleet is not None
    plugin = {"name": "auto_checkpoint", "opts": {"on_events": ["session_end"]}}
    session = await _session(fleet, {"text": "the answer"}, plugins=[plugin])
    await session.prompt("question")
    await until_end(session)
    await session.send("stop")
    events = await until(session, "session_stopped")
    (saved,) = _plugin_events(events, "auto_checkpoint_saved")
    assert saved["trigger"] == "session_end"
    restored = await fleet.fleet.create_agent(
        model="mock:echo",
        from_checkpoint={"session_id": session.sid, "checkpoint_id": saved["checkpoint_id"]},
    )
    contents = [m["content"] for m in await fleet.history(restored.sid)]
    assert contents == ["question", "the answer"]


async def test_auto_checkpoint_keeps_at_most_max_checkpoints_for_at_most_ttl_seconds(
    fleet: Harness,
) -> None:
    opts = {"every_n_turns": 1, "max_checkpoints": 2, "ttl_seconds": 60}
    session = await _session(
        fleet,
        {"text": "1"},
        {"text": "2"},
        {"text": "3"},
        plugins=[{"name": "auto_checkpoint", "opts": opts}],
    )
    for text in ("a", "b", "c"):
        await session.prompt(text)
        await until(session, "auto_checkpoint_saved", "plugin_event")
    keys = RedisKeys(fleet.settings.redis_prefix)

    async def two_left() -> bool:
        return await fleet.redis.zcard(keys.checkpoints("acme", session.sid)) == 2

    await eventually(two_left, what="the oldest checkpoint dropped")
    for checkpoint_id in await fleet.redis.zrange(keys.checkpoints("acme", session.sid), 0, -1):
        ttl = await fleet.redis.ttl(keys.checkpoint("acme", session.sid, checkpoint_id.decode()))
        assert 0 < ttl <= 60, "the session's ttl_seconds, below the fleet's 7 days"


# -- content_policy ----------------------------------------------------------------------------
def _policy(verdict: dict[str, Any], **opts: Any) -> list[dict[str, Any]]:
    judge = {"judge_model": "mock:script", "judge_provider_opts": script(verdict)}
    return [{"name": "content_policy", "opts": {**judge, "brand_keywords": ["Acme"], **opts}}]


async def test_a_blocked_prompt_is_rejected(fleet: Harness) -> None:
    session = await _session(
        fleet, {"text": "never"}, plugins=_policy({"text": "BLOCK: off-brand"})
    )
    await session.prompt("Acme is terrible")
    (rejected,) = of_type(await until(session, "prompt_rejected"), "prompt_rejected")
    assert rejected == {"text": "Acme is terrible", "reason": "plugin: content_policy: off-brand"}
    assert await fleet.history(session.sid) == []


async def test_a_blocked_answer_aborts_the_turn(fleet: Harness) -> None:
    plugins = _policy({"text": "BLOCK: leaks a card number"}, check_prompts=False)
    session = await _session(fleet, {"text": "card 4111 1111 1111 1111"}, plugins=plugins)
    await session.prompt("what is my card?")
    events = await until_end(session)
    assert events[-1].type == "agent_abort"
    assert events[-1].data["reason"] == "plugin: content_policy: leaks a card number"


async def test_a_failing_judge_fails_open(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "fine"}, plugins=_policy({"error": "server"}))
    await session.prompt("hello")
    events = await until_end(session)
    assert events[-1].type == "agent_end" and events[-1].data["last_message"]["content"] == "fine"
    errors = _plugin_events(events, "content_policy_error")
    assert [e["hook"] for e in errors] == ["before_prompt", "after_response"]
    assert "server" in errors[0]["error"]


async def test_the_judges_calls_are_the_sessions_spend(fleet: Harness) -> None:
    verdict = {"text": "ALLOW", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}}
    judge = {
        "judge_model": "mock:script",
        "judge_provider_opts": script(verdict, price={"input_per_mtok": 1.0}),
    }
    cost = REGISTRY.get_sample_value("flotilla_worker_llm_cost_usd_total", {"provider": "mock"})
    plugins = [{"name": "content_policy", "opts": judge}]
    session = await _session(fleet, {"text": "fine"}, plugins=plugins)
    await session.prompt("hello")
    events = await until_end(session)
    assert events[-1].data["usage"]["cost_usd"] == pytest.approx(1.0)  # the answer's check
    assert (await fleet.state(session.sid))["usage"]["cost_usd"] == pytest.approx(2.0)
    after = REGISTRY.get_sample_value("flotilla_worker_llm_cost_usd_total", {"provider": "mock"})
    assert after - (cost or 0.0) == pytest.approx(2.0)


# -- large_result_offload ----------------------------------------------------------------------
async def test_the_plugin_lowers_the_sessions_offload_budget(fleet: Harness) -> None:
    body = "\n".join(f"line {i:04d} " + "x" * 40 for i in range(100))  # ~5,000 characters
    plugin = {"name": "large_result_offload", "opts": {"tool_token_limit_before_evict": 250}}
    session = await _session(
        fleet,
        {"tool_calls": [call("write_file", path="big.txt", content=body)]},
        {"tool_calls": [call("read_file", path="big.txt")]},
        {"text": "done"},
        tools=["write_file", "read_file"],
        plugins=[plugin],
    )
    await session.prompt("go")
    events = await until_end(session)
    result = of_type(events, "tool_execution_end")[-1]["result"]
    assert len(result) <= 1000 < len(body) < fleet.settings.tool_result_max_chars
    assert "The full output is in .flotilla/results/" in result


# -- event_logger ------------------------------------------------------------------------------
async def test_every_hook_of_a_turn_is_logged_without_secrets(fleet: Harness) -> None:
    secret = call("write_file", path="env.sh", content="export API_KEY=sk-live-123")
    session = await _session(
        fleet,
        {"tool_calls": [secret]},
        {"text": "done"},
        tools=["write_file"],
        plugins=["event_logger"],
    )
    await session.prompt("go")
    await until_end(session)

    async def logged() -> bool:
        text = await _file(fleet, session.sid, ".flotilla/events.jsonl") or ""
        return '"after_turn"' in text

    await eventually(logged, what="the after_turn line")
    text = await _file(fleet, session.sid, ".flotilla/events.jsonl") or ""
    hooks = [orjson.loads(line)["hook"] for line in text.splitlines()]
    assert hooks[0] == "session_start" and hooks[-1] == "after_turn"
    assert {"before_prompt", "before_request", "before_tool", "after_tool"} <= set(hooks)
    assert "sk-live-123" not in text and "API_KEY=***" in text


# -- prompt_cache ------------------------------------------------------------------------------
@pytest.mark.usefixtures("litellm_loopback")
async def test_prompt_cache_marks_the_system_prompt_and_last_message_on_the_wire(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    async with OpenAIStub() as stub:
        stub.script(Reply(text="cached"))
        session = await fleet.fleet.create_agent(
            model="openai:gpt-test",
            plugins=[{"name": "prompt_cache", "opts": {"providers": ["openai"]}}],
            provider_opts={"base_url": stub.base_url, "api_key": "sk-test"},
        )
        await session.prompt("hi")
        events = await until_end(session, timeout=30)
    assert events[-1].data["last_message"]["content"] == "cached"
    system, user = stub.requests[0].body["messages"]
    assert system["role"] == "system" and system["cache_control"] == {"type": "ephemeral"}
    assert user == {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}
