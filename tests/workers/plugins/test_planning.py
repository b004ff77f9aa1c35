"""Planning: a plan asked for on long prompts, read from the answer or write_todos, published
and kept in the system prompt; retries bounded by max_plan_attempts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import (
    ChainOutcome,
    Emit,
    Hook,
    Intervene,
    Planning,
    PluginChain,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._planning import EXECUTE, PLAN_REQUEST, PLAN_RETRY, parse_plan

LONG = "Refactor the billing module and add tests for refunds"


class Planned:
    def __init__(self, ctx: PluginContext, **opts: Any) -> None:
        self.ctx, self.io = ctx, MemoryIO()
        self.chain = PluginChain([Planning(opts)])
        self.states = self.chain.initial_states()

    async def run(self, hook: Hook, **payload: Any) -> ChainOutcome:
        return await self.chain.run(hook, payload, self.states, self.ctx, self.io)

    async def request(self, prompt: str) -> ChainOutcome:
        return await self.run(Hook.BEFORE_REQUEST, messages=[{"role": "user", "content": prompt}])

    async def respond(self, text: str = "", **extra: Any) -> ChainOutcome:
        return await self.run(
            Hook.AFTER_RESPONSE, message={"role": "assistant", "content": text, **extra}
        )


async def test_a_long_prompt_asks_for_a_plan_first(ctx: PluginContext) -> None:
    session = Planned(ctx)
    assert (await session.request(LONG)).terminal == Intervene(PLAN_REQUEST)
    assert (await session.request(LONG)).terminal is None, "only before the first request"


async def test_a_short_prompt_or_plan_first_off_asks_nothing(ctx: PluginContext) -> None:
    assert (await Planned(ctx).request("hi")).terminal is None
    assert (await Planned(ctx, plan_first=False).request(LONG)).terminal is None


async def test_the_plan_is_published_kept_in_the_prompt_then_carried_out(
    ctx: PluginContext,
) -> None:
    session = Planned(ctx)
    await session.request(LONG)
    outcome = await session.respond("Plan:\n1. Read billing.py\n2) Add refund tests\n- Run them")
    steps = ["Read billing.py", "Add refund tests", "Run them"]
    assert [e.emit for e in outcome.emits] == [
        Emit("plan_generated", {"steps": steps, "attempts": 1, "source": "answer"})
    ]
    assert session.io.system_context["plan"] == (
        "Plan:\n1. Read billing.py\n2. Add refund tests\n3. Run them"
    )
    final = await session.run(Hook.BEFORE_FINISH, message={})
    assert final.terminal == Intervene(EXECUTE)
    assert (await session.run(Hook.BEFORE_FINISH, message={})).terminal is None


async def test_an_unreadable_plan_is_asked_again_then_given_up(ctx: PluginContext) -> None:
    session = Planned(ctx, max_plan_attempts=2)
    await session.request(LONG)
    assert (await session.respond("I will just do it.")).terminal == Intervene(PLAN_RETRY)
    assert (await session.respond("Really, trust me.")).terminal is None
    assert "plan" not in session.io.system_context
    assert (await session.run(Hook.BEFORE_FINISH, message={})).terminal is None


async def test_write_todos_becomes_the_plan_even_without_plan_first(ctx: PluginContext) -> None:
    session = Planned(ctx, plan_first=False)
    await session.request(LONG)
    todos = [{"id": "1", "content": "Read", "status": "pending"}, {"content": "Fix"}]
    call = {"call_id": "c1", "name": "write_todos", "arguments": {"todos": todos}}
    outcome = await session.respond(tool_calls=[call])
    assert outcome.emits[0].emit.data["steps"] == ["Read", "Fix"]
    assert outcome.emits[0].emit.data["source"] == "write_todos"
    assert session.io.system_context["plan"] == "Plan:\n1. Read\n2. Fix"
    assert (await session.run(Hook.BEFORE_FINISH, message={})).terminal is None


async def test_the_next_turn_plans_again(ctx: PluginContext) -> None:
    session = Planned(ctx)
    await session.request(LONG)
    await session.respond("1. one")
    await session.run(Hook.AFTER_TURN, outcome="finished")
    assert (await session.request(LONG)).terminal == Intervene(PLAN_REQUEST)


def test_parse_plan_reads_numbered_and_bulleted_lines() -> None:
    assert parse_plan("Intro\n1. a\n  2) b\n* c\n[ ] d\nnot a step") == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"plan_first": "yes"}, "plan_first"),
        ({"min_prompt_length": -1}, "min_prompt_length"),
        ({"max_plan_attempts": 0}, "max_plan_attempts"),
        ({"plan": True}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        Planning(opts)
