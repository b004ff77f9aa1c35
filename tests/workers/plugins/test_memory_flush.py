"""MemoryFlush: the key facts of compacted messages appended to MEMORY.md."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import (
    ChainOutcome,
    Hook,
    MemoryFlush,
    PluginChain,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._memory_flush import extract_facts

REMOVED = [
    {"role": "user", "content": "I prefer Phoenix LiveView over React for frontends, remember."},
    {"role": "assistant", "content": "Noted: I always use LiveView."},
    {"role": "user", "content": "Write a login page. What time is it? We decided to use Postgres."},
    {"role": "user", "content": "我喜欢用 Phoenix LiveView 而不是 React 写前端,记住。"},
]


async def _flush(
    io: MemoryIO, messages: list[dict[str, Any]], ctx: PluginContext, **opts: Any
) -> ChainOutcome:
    chain = PluginChain([MemoryFlush(opts)])
    return await chain.run(
        Hook.BEFORE_COMPACT, {"messages": messages, "reason": "threshold"}, {}, ctx, io
    )


def test_the_heuristic_keeps_user_preferences_and_decisions_only() -> None:
    assert extract_facts(REMOVED, 10) == [
        "I prefer Phoenix LiveView over React for frontends, remember.",
        "We decided to use Postgres.",
        "我喜欢用 Phoenix LiveView 而不是 React 写前端,记住",
    ]
    assert len(extract_facts(REMOVED, 2)) == 2


async def test_facts_are_appended_to_the_file_and_emitted(ctx: PluginContext) -> None:
    io = MemoryIO(files={"MEMORY.md": "# Memory\n\n- Call me Ada"})
    outcome = await _flush(io, REMOVED[:1], ctx)
    fact = "I prefer Phoenix LiveView over React for frontends, remember."
    assert io.files["MEMORY.md"] == f"# Memory\n\n- Call me Ada\n- {fact}\n"
    (emitted,) = outcome.emits
    assert emitted.emit.type == "memory_flush"
    assert emitted.emit.data == {
        "facts": [fact],
        "count": 1,
        "file": "MEMORY.md",
        "extractor": "heuristic",
    }


async def test_known_facts_are_not_written_twice(ctx: PluginContext) -> None:
    io = MemoryIO()
    await _flush(io, REMOVED, ctx, file="notes/MEMORY.md")
    first = io.files["notes/MEMORY.md"]
    assert first.startswith("# Memory\n\n- I prefer")
    again = await _flush(io, REMOVED, ctx, file="notes/MEMORY.md")
    assert io.files["notes/MEMORY.md"] == first and not again.emits
    await _flush(io, REMOVED, ctx, file="notes/MEMORY.md", dedupe=False)
    assert io.files["notes/MEMORY.md"].count("We decided to use Postgres.") == 2


async def test_an_extract_model_replaces_the_heuristic(ctx: PluginContext) -> None:
    io = MemoryIO(judge=lambda _m, _msgs: "- The user deploys on Fly.io\n- Tests use pytest\n")
    outcome = await _flush(io, REMOVED, ctx, extract_model="mock:script", max_facts_per_flush=1)
    assert io.files["MEMORY.md"] == "# Memory\n\n- The user deploys on Fly.io\n"
    assert outcome.emits[0].emit.data["extractor"] == "llm"
    sent = io.completions[0]["messages"]
    assert "at most 1 durable facts" in sent[0]["content"] and "Postgres" in sent[1]["content"]


async def test_a_failing_extract_model_falls_back_to_the_heuristic(ctx: PluginContext) -> None:
    def fail(_model: str, _messages: list[dict[str, Any]]) -> str:
        raise TimeoutError("judge too slow")

    io = MemoryIO(judge=fail)
    outcome = await _flush(io, REMOVED, ctx, extract_model="mock:script")
    data = outcome.emits[0].emit.data
    assert data["extractor"] == "heuristic" and data["error"] == "TimeoutError: judge too slow"
    assert "- We decided to use Postgres.\n" in io.files["MEMORY.md"]


async def test_nothing_worth_keeping_writes_nothing(ctx: PluginContext) -> None:
    io = MemoryIO()
    outcome = await _flush(io, [{"role": "user", "content": "hello there"}], ctx)
    assert not outcome.emits and io.files == {}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"file": "/tmp/MEMORY.md"}, "relative workspace path"),
        ({"max_facts_per_flush": 0}, "max_facts_per_flush must be an integer >= 1"),
        ({"dedupe": "yes"}, "dedupe must be true or false"),
        ({"extract_fn": "x"}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        MemoryFlush(opts)
