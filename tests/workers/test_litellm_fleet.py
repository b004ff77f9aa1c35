"""A real model path end to end: a fleet session on `openai:` served by a local
OpenAI-compatible server over real HTTP and SSE, through litellm."""

from __future__ import annotations

import pytest

from flotilla import CommandError
from tests.conftest import Harness
from tests.engine_helpers import of_type, script, until_end
from tests.openai_stub import OpenAIStub, Reply, ToolCall

KEY = "sk-test-DO-NOT-LEAK-41"


@pytest.mark.usefixtures("litellm_loopback")
async def test_a_litellm_session_streams_text_and_runs_a_tool_call(fleet: Harness) -> None:
    assert fleet.fleet is not None
    async with OpenAIStub() as stub:
        stub.script(
            Reply(
                tool_calls=(ToolCall("write_file", {"path": "a.txt", "content": "hi"}, id="t1"),)
            ),
            Reply(text="the file is written, all good", usage={"prompt_tokens": 40}),
        )
        session = await fleet.fleet.create_agent(
            model="openai:gpt-test",
            tools=["write_file"],
            provider_opts={
                "base_url": stub.base_url,
                "api_key": KEY,
                "price": {"input_per_mtok": 1.0},
            },
        )
        await session.prompt("write it")
        events = await until_end(session, timeout=30)
    deltas = of_type(events, "message_delta")
    assert (
        len(deltas) > 1 and "".join(d["delta"] for d in deltas) == "the file is written, all good"
    )
    assert of_type(events, "tool_execution_end")[0]["status"] == "ok"
    assert events[-1].data["reason"] == "finished"
    assert of_type(events, "llm_call")[-1]["prompt_tokens"] == 40
    sent = stub.requests[1].body
    assert sent["messages"][-1]["role"] == "tool" and sent["messages"][-1]["tool_call_id"] == "t1"
    assert any(t["function"]["name"] == "write_file" for t in sent["tools"])
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert all(KEY not in e.model_dump_json() for e in events)


@pytest.mark.usefixtures("litellm_loopback")
async def test_a_rate_limited_model_is_retried_with_retry_events(fleet: Harness) -> None:
    assert fleet.fleet is not None
    async with OpenAIStub() as stub:
        stub.script(Reply(status=429, retry_after=0), Reply(text="after the retry"))
        session = await fleet.fleet.create_agent(
            model="openai:gpt-test", provider_opts={"base_url": stub.base_url, "api_key": KEY}
        )
        await session.prompt("go")
        events = await until_end(session, timeout=30)
    assert of_type(events, "retry")[0]["reason"] == "rate_limit"
    assert events[-1].data["last_message"]["content"] == "after the retry"


async def test_mock_sessions_never_import_litellm(fleet: Harness) -> None:
    import sys

    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:script", provider_opts=script({"text": "x"})
    )
    await session.prompt("go")
    await until_end(session)
    assert sys.modules.get("litellm") is None


@pytest.mark.usefixtures("litellm_loopback")
async def test_a_provider_litellm_does_not_know_is_refused_at_create_and_switch(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    with pytest.raises(CommandError) as refused:
        await fleet.fleet.create_agent(model="nosuchprovider:model-x")
    assert refused.value.code == "unsupported_provider"
    assert "nosuchprovider" in str(refused.value)
    with pytest.raises(CommandError) as refused:  # a sub-agent's model is checked too
        await fleet.fleet.create_agent(
            model="mock:echo",
            subagents=[{"name": "r", "description": "d", "model": "nosuch:m"}],
        )
    assert refused.value.code == "unsupported_provider"

    session = await fleet.fleet.create_agent(model="mock:echo")
    request_id = await session.switch_model("nosuchprovider:model-x")
    with pytest.raises(CommandError) as refused:
        await session.wait_for({"model_switched"}, request_id=request_id, timeout=10)
    assert refused.value.code == "unsupported_provider"
    assert (await fleet.state(session.sid))["model"] == "mock:echo"  # unchanged
    request_id = await session.switch_model("openai:gpt-test")  # a known one is fine
    await session.wait_for({"model_switched"}, request_id=request_id, timeout=10)


async def test_a_real_provider_without_litellm_installed_is_refused_at_create(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None  # `import litellm` fails outside `litellm_loopback`
    with pytest.raises(CommandError) as refused:
        await fleet.fleet.create_agent(model="openai:gpt-test")
    assert refused.value.code == "unsupported_provider"
    assert "litellm is not installed" in str(refused.value)
    session = await fleet.fleet.create_agent(model="mock:echo")  # the mock needs no litellm
    await session.close()
