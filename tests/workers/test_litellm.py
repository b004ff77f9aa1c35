"""The litellm adapter against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.openai_stub import CONTEXT_OVERFLOW, OpenAIStub, Reply, ToolCall
from workers._litellm import LiteLLM
from workers._llm import Chunk, LLMError, LLMRequest, LLMResponse

KEY = "sk-flotilla-SECRET-4242"


@pytest.fixture
async def stub(litellm_loopback: list[str]) -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


async def call(
    stub: OpenAIStub,
    model: str = "openai:gpt-test",
    messages: list[dict[str, Any]] | None = None,
    **opts: Any,
) -> tuple[list[Chunk], LLMResponse]:
    """One LLM call through the adapter; returns the chunks and the filled response."""
    request = LLMRequest(
        model=model,
        messages=messages or [{"role": "user", "content": "hello"}],
        system_prompt=opts.pop("system_prompt", ""),
        provider_opts={"base_url": stub.base_url, "api_key": KEY, **opts},
        max_tokens=opts.pop("max_tokens", None),
        prompt_chars=opts.pop("prompt_chars", 5),
        tools=opts.pop("tools", []),
    )
    response = LLMResponse()
    chunks = [chunk async for chunk in LiteLLM().stream(request, response)]
    return chunks, response


async def failure(stub: OpenAIStub, reply: Reply, **opts: Any) -> LLMError:
    stub.script(reply)
    with pytest.raises(LLMError) as caught:
        await call(stub, **opts)
    return caught.value


async def test_text_streams_in_several_deltas_with_usage_and_price(stub: OpenAIStub) -> None:
    stub.script(Reply(text="hello there, fleet", usage={"prompt_tokens": 100_000}))
    chunks, response = await call(stub, price={"input_per_mtok": 3.0, "output_per_mtok": 15.0})
    assert [c.kind for c in chunks] == ["text"] * 5
    assert "".join(c.delta for c in chunks) == response.text == "hello there, fleet"
    assert (response.prompt_tokens, response.completion_tokens) == (100_000, 5)
    assert response.cost_usd == pytest.approx(0.3 + 5 * 15 / 1e6)


async def test_a_known_model_is_priced_from_litellms_cost_map(stub: OpenAIStub) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "cached_tokens": 200}
    stub.script(Reply(text="ok", usage=usage))
    _, response = await call(stub, model="openai:gpt-4o-mini")
    assert response.cached_tokens == 200
    # gpt-4o-mini: $0.15 per million input tokens (half for cached ones), $0.60 output
    assert response.cost_usd == pytest.approx((800 * 0.15 + 200 * 0.075 + 500 * 0.6) / 1e6)
    assert stub.requests[0].body["model"] == "gpt-4o-mini"


async def test_an_unpriced_model_costs_nothing(stub: OpenAIStub) -> None:
    _, response = await call(stub, model="openai:gpt-test")
    assert response.text == "echo: hello"
    assert response.prompt_tokens > 0
    assert response.cost_usd == 0.0


async def test_tokens_are_counted_when_the_provider_reports_no_usage(stub: OpenAIStub) -> None:
    stub.script(Reply(text="a few words of text", send_usage=False))
    _, response = await call(stub, price={"input_per_mtok": 1e6, "output_per_mtok": 0.0})
    assert response.prompt_tokens > 0
    assert response.completion_tokens > 0
    assert response.cost_usd == response.prompt_tokens


async def test_reasoning_streams_as_thinking_before_the_text(stub: OpenAIStub) -> None:
    stub.script(Reply(reasoning="let me think", text="42"))
    chunks, response = await call(stub)
    assert [c.kind for c in chunks] == ["thinking"] * 3 + ["text"]
    assert "".join(c.delta for c in chunks if c.kind == "thinking") == "let me think"
    assert (response.thinking, response.text) == ("let me think", "42")


async def test_tool_call_arguments_arrive_in_pieces_and_are_decoded(stub: OpenAIStub) -> None:
    calls = (
        ToolCall("read_file", {"path": "src/a.txt", "lines": [1, 20]}, id="call_a"),
        ToolCall("ls", {}, id="call_b"),
    )
    stub.script(Reply(tool_calls=calls, chunk_chars=3))
    chunks, response = await call(stub)
    assert chunks == []
    assert response.tool_calls == [
        {
            "call_id": "call_a",
            "name": "read_file",
            "arguments": {"path": "src/a.txt", "lines": [1, 20]},
        },
        {"call_id": "call_b", "name": "ls", "arguments": {}},
    ]


async def test_undecodable_tool_arguments_are_kept_raw(stub: OpenAIStub) -> None:
    stub.script(Reply(tool_calls=(ToolCall("grep", '{"pattern": "a', id="c1"),)))
    _, response = await call(stub)
    assert response.tool_calls[0]["arguments"] == {"_raw": '{"pattern": "a'}


async def test_history_with_tool_calls_and_results_is_sent_in_openai_format(
    stub: OpenAIStub,
) -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "read a"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "need the file",
            "tool_calls": [{"call_id": "c1", "name": "read_file", "arguments": {"path": "a"}}],
        },
        {
            "role": "tool_result",
            "call_id": "c1",
            "name": "read_file",
            "content": "A",
            "is_error": False,
        },
        {"role": "assistant", "content": "it says A"},
    ]
    await call(stub, messages=history, system_prompt="be brief")
    assert stub.requests[0].body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "read a"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A"},
        {"role": "assistant", "content": "it says A"},
    ]


async def test_tools_and_options_reach_the_provider_but_flotillas_own_do_not(
    stub: OpenAIStub,
) -> None:
    tool = {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}}}
    await call(stub, tools=[tool], max_tokens=64, temperature=0.5, script=[{"text": "x"}])
    sent = stub.requests[0]
    assert sent.body["tools"] == [tool]
    assert (sent.body["max_tokens"], sent.body["temperature"]) == (64, 0.5)
    assert sent.body["stream"] is True
    assert "script" not in sent.body
    assert sent.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (Reply(status=429), "rate_limit", True),
        (Reply(status=500), "server", True),
        (Reply(status=503), "server", True),
        (Reply(status=401), "auth", False),
        (Reply(status=403), "auth", False),
        (
            Reply(status=400, message=CONTEXT_OVERFLOW, code="context_length_exceeded"),
            "context_overflow",
            False,
        ),
        (Reply(status=400, message="'temperature' must be a number"), "bad_request", False),
        (Reply(status=404, message="no such model"), "bad_request", False),
    ],
)
async def test_http_errors_map_to_codes_without_retries_inside_litellm(
    stub: OpenAIStub, reply: Reply, code: str, retryable: bool
) -> None:
    error = await failure(stub, reply)
    assert (error.code, error.retryable) == (code, retryable)
    assert len(stub.requests) == 1  # the engine retries, with `retry` events; litellm must not


async def test_rate_limit_carries_the_retry_after_header(stub: OpenAIStub) -> None:
    error = await failure(stub, Reply(status=429, retry_after=7))
    assert (error.code, error.retry_after) == ("rate_limit", 7.0)


async def test_a_slow_provider_times_out_retryably(stub: OpenAIStub) -> None:
    error = await failure(stub, Reply(text="late", delay_s=10), timeout_ms=200)
    assert (error.code, error.retryable) == ("timeout", True)


async def test_an_unreachable_provider_is_a_retryable_server_error(stub: OpenAIStub) -> None:
    async with OpenAIStub() as gone:
        pass
    error = await failure(stub, Reply(), base_url=gone.base_url)
    assert (error.code, error.retryable) == ("server", True)


async def test_the_api_key_is_never_in_an_error_or_a_log(
    stub: OpenAIStub, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for status in (401, 429, 500, 400):
        echoing = Reply(status=status, message=f"Incorrect API key provided: {KEY}.")
        error = await failure(stub, echoing)
        assert KEY not in str(error)
        assert "***" in str(error)
    out, err = capfd.readouterr()
    assert KEY not in caplog.text + out + err


async def test_without_litellm_installed_a_real_model_fails_cleanly() -> None:
    request = LLMRequest("openai:gpt-test", [], "", {}, None)
    with pytest.raises(LLMError) as caught:
        async for _ in LiteLLM().stream(request, LLMResponse()):
            pass
    assert (caught.value.code, caught.value.retryable) == ("unsupported_provider", False)


def test_litellm_is_not_imported_before_the_first_call() -> None:
    code = (
        "import sys, workers, workers._litellm\n"
        "workers._litellm.LiteLLM()\n"
        "assert 'litellm' not in sys.modules and 'openai' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_the_stub_answers_an_unstreamed_request_with_one_completion() -> None:
    async with OpenAIStub() as stub, httpx.AsyncClient() as client:
        stub.script(Reply(text="hi", tool_calls=(ToolCall("ls", {"path": "."}),)))
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        reply = await client.post(f"{stub.base_url}/chat/completions", json=body)
    message = reply.json()["choices"][0]["message"]
    assert message["content"] == "hi"
    assert message["tool_calls"][0]["function"] == {"name": "ls", "arguments": '{"path":"."}'}
    assert stub.requests[0].body == body
