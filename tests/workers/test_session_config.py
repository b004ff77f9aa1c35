"""switch_model, attach_tool / detach_tool, update_plugin_opts, checkpoints."""

from __future__ import annotations

from typing import Any

import pytest

from flotilla import CommandError, Fleet, Session
from flotilla.keys import RedisKeys
from tests.conftest import Harness
from tests.engine_helpers import call, of_type, script, until, until_end


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    return await fleet.fleet.create_agent(
        model="mock:script", provider_opts=script(*steps), **options
    )


async def test_switch_model_when_idle_applies_to_the_next_prompt(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "scripted"})
    await session.switch_model("mock:echo")
    switched = (await until(session, "model_switched"))[-1].data
    assert switched == {"from": "mock:script", "to": "mock:echo", "provider_opts_changed": False}
    await session.prompt("hi")
    assert await session.collect_reply(timeout=5) == "echo: hi"


async def test_switching_to_the_same_model_is_a_no_op(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "a"})
    await session.switch_model("mock:script")
    await session.prompt("hi")
    events = await until_end(session)
    assert not of_type(events, "model_switched")


async def test_attach_and_detach_tools_with_their_errors(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"}, tools=["read_file"])
    await session.attach_tool("CMDC.Tool.ListDir")
    assert (await until(session, "tool_attached"))[-1].data == {"name": "list_dir"}
    for command, code in (
        (session.attach_tool("read_file"), "already_attached"),
        (session.attach_tool("no_such_tool"), "invalid_tool"),
        (session.detach_tool("grep"), "not_found"),
    ):
        await command
        assert (await until(session, "error"))[-1].data["code"] == code
    await session.detach_tool("read_file")
    assert (await until(session, "tool_detached"))[-1].data == {"name": "read_file"}


async def test_a_call_to_a_detached_tool_gets_an_error_result(fleet: Harness) -> None:
    session = await _session(
        fleet, {"tool_calls": [call("read_file", path="a")]}, {"text": "ok"}, tools=["read_file"]
    )
    await session.detach_tool("read_file")
    await until(session, "tool_detached")
    await session.prompt("go")
    events = await until_end(session)
    assert of_type(events, "tool_call_unknown")[0]["name"] == "read_file"
    assert events[-1].data["reason"] == "finished"


async def test_an_invalid_callback_tool_spec_is_refused(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"})
    await session.attach_tool(
        {"name": "cb", "description": "d", "parameters": {}, "callback_url": "http://127.0.0.1/x"}
    )
    error = (await until(session, "error"))[-1].data
    assert error["code"] == "invalid_tool"


async def test_update_plugin_opts_applies_when_idle(fleet: Harness) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [call("write_file", path="a", content="b")]},
        {"text": "done"},
        tools=["write_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
    )
    await session.update_plugin_opts("human_approval", {"tools": []})
    updated = (await until(session, "plugin_opts_updated"))[-1].data
    assert updated == {"plugin": "human_approval", "success": True, "error": None, "mode": "merge"}
    await session.prompt("go")
    events = await until_end(session)
    assert not of_type(events, "approval_required")


async def test_update_plugin_opts_of_an_unknown_plugin_is_an_error(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"})
    await session.update_plugin_opts("security_guard", {})
    assert (await until(session, "error"))[-1].data["code"] == "not_found"


async def test_a_checkpoint_restores_history_and_workspace_without_secrets(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    session = await _session(
        fleet,
        {"tool_calls": [call("write_file", path="notes.txt", content="kept")]},
        {"text": "saved"},
        tools=["write_file", "read_file"],
    )
    await session.prompt("remember")
    await until_end(session)
    checkpoint_id = await session.checkpoint("before")
    restored = await fleet.fleet.create_agent(
        model="mock:script",
        provider_opts=script({"tool_calls": [call("read_file", path="notes.txt")]}, {"text": "ok"}),
        from_checkpoint={"session_id": session.sid, "checkpoint_id": checkpoint_id},
    )
    await restored.prompt("what did you save?")
    events = await until_end(restored)
    assert of_type(events, "tool_execution_end")[0]["result"].startswith("kept")
    history = await fleet.history(restored.sid)
    assert history[0]["content"] == "remember"


async def test_a_resumed_session_takes_the_tools_its_create_names(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await _session(fleet, {"text": "x"}, tools=["write_file"])
    checkpoint_id = await session.checkpoint()
    ref = {"session_id": session.sid, "checkpoint_id": checkpoint_id}
    kept = await fleet.fleet.create_agent(model="mock:echo", from_checkpoint=ref)
    named = await fleet.fleet.create_agent(
        model="mock:echo", from_checkpoint=ref, tools=["read_file", "write_file"]
    )
    assert (await fleet.state(kept.sid))["tools"] == ["write_file"]
    assert (await fleet.state(named.sid))["tools"] == ["read_file", "write_file"]


async def test_checkpoints_redact_provider_keys(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"}, tools=[])
    await session.switch_model("mock:echo", provider_opts={"api_key": "sk-SECRET-123"})
    await until(session, "model_switched")
    checkpoint_id = await session.checkpoint()
    key = RedisKeys(fleet.settings.redis_prefix).checkpoint("acme", session.sid, checkpoint_id)
    raw = await fleet.redis.hgetall(key)
    assert raw
    assert all(b"sk-SECRET-123" not in value for value in raw.values())


async def test_a_checkpoint_of_another_tenant_is_not_found(fleet: Harness) -> None:
    session = await _session(fleet, {"text": "x"})
    checkpoint_id = await session.checkpoint()
    async with await Fleet.connect(settings=fleet.settings, tenant="other") as other:
        with pytest.raises(CommandError) as refused:
            await other.create_agent(
                model="mock:echo",
                from_checkpoint={"session_id": session.sid, "checkpoint_id": checkpoint_id},
            )
    assert refused.value.code == "not_found"
