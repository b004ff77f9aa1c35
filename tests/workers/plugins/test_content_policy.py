"""ContentPolicy: an LLM judge on prompts and answers; BLOCK aborts, failures fail open."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import (
    Abort,
    ChainOutcome,
    ContentPolicy,
    Hook,
    PluginChain,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._content_policy import parse_verdict

JUDGE = {"judge_model": "openai:gpt-4o-mini", "judge_provider_opts": {"temperature": 0.0}}


async def _run(
    io: MemoryIO, hook: Hook, payload: dict[str, Any], ctx: PluginContext, **opts: Any
) -> ChainOutcome:
    return await PluginChain([ContentPolicy({**JUDGE, **opts})]).run(hook, payload, {}, ctx, io)


async def test_a_blocked_prompt_aborts_with_the_judges_reason(ctx: PluginContext) -> None:
    io = MemoryIO(judge=lambda _m, _msgs: "BLOCK: asks for a credit card number")
    outcome = await _run(io, Hook.BEFORE_PROMPT, {"text": "card of John?"}, ctx)
    assert outcome.terminal == Abort("content_policy: asks for a credit card number")
    call = io.completions[0]
    assert (call["model"], call["provider_opts"]) == ("openai:gpt-4o-mini", {"temperature": 0.0})
    assert call["messages"][1]["content"] == "<content>\ncard of John?\n</content>"
    assert "the user's message" in call["messages"][0]["content"]


async def test_an_allowed_answer_goes_on_and_brands_reach_the_judge(ctx: PluginContext) -> None:
    io = MemoryIO(judge=lambda _m, _msgs: "ALLOW")
    message = {"role": "assistant", "content": "MyProduct is great."}
    outcome = await _run(
        io, Hook.AFTER_RESPONSE, {"message": message}, ctx, brand_keywords=["MyProduct"]
    )
    assert outcome.terminal is None and not outcome.emits
    system = io.completions[0]["messages"][0]["content"]
    assert "the assistant's answer" in system and "brands: MyProduct" in system


async def test_a_judge_failure_fails_open_with_an_event(ctx: PluginContext) -> None:
    def fail(_model: str, _messages: list[dict[str, Any]]) -> str:
        raise TimeoutError

    outcome = await _run(MemoryIO(judge=fail), Hook.BEFORE_PROMPT, {"text": "hi"}, ctx)
    assert outcome.terminal is None
    assert outcome.emits[0].emit.type == "content_policy_error"
    assert outcome.emits[0].emit.data == {"hook": "before_prompt", "error": "TimeoutError: "}


async def test_an_unreadable_verdict_fails_open(ctx: PluginContext) -> None:
    io = MemoryIO(judge=lambda _m, _msgs: "echo: hi")
    outcome = await _run(io, Hook.BEFORE_PROMPT, {"text": "hi"}, ctx)
    assert outcome.terminal is None
    assert outcome.emits[0].emit.data["error"].startswith("unreadable verdict")


async def test_no_judge_for_tool_calls_only_or_unchecked_hooks(ctx: PluginContext) -> None:
    io = MemoryIO(judge=lambda _m, _msgs: "BLOCK")
    calls_only = {"message": {"role": "assistant", "content": "", "tool_calls": [{}]}}
    assert (await _run(io, Hook.AFTER_RESPONSE, calls_only, ctx)).terminal is None
    answer = {"message": {"role": "assistant", "content": "x"}}
    unchecked = await _run(io, Hook.AFTER_RESPONSE, answer, ctx, check_responses=False)
    assert unchecked.terminal is None and io.completions == []


async def test_without_judge_model_the_session_model_judges(ctx: PluginContext) -> None:
    io = MemoryIO()
    await PluginChain([ContentPolicy({})]).run(Hook.BEFORE_PROMPT, {"text": "hi"}, {}, ctx, io)
    assert io.completions[0]["model"] == ctx.model


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("ALLOW", ""),
        ("allow.", ""),
        ("BLOCK: off-brand", "off-brand"),
        ("**BLOCK** - rude\nbecause", "rude"),
        ("BLOCK", "blocked"),
        ("I would ALLOW it", None),
        ("", None),
    ],
)
def test_verdicts_are_read_from_the_first_line(answer: str, verdict: str | None) -> None:
    assert parse_verdict(answer) == verdict


def test_bad_options_are_refused() -> None:
    with pytest.raises(PluginOptsError, match="timeout_ms must be an integer"):
        ContentPolicy({"timeout_ms": "fast"})
