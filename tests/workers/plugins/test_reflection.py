"""Reflection: a review at before_finish, the pass signal, the max_reviews bound, reset per turn."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workers.plugins.conftest import NO_IO
from workers.plugins import (
    ChainOutcome,
    Emit,
    Hook,
    Intervene,
    PluginChain,
    PluginContext,
    PluginOptsError,
    Reflection,
)


class Reviewed:
    """A session with Reflection: feed it answers, see what it does."""

    def __init__(self, ctx: PluginContext, **opts: Any) -> None:
        self.ctx = ctx
        self.chain = PluginChain([Reflection(opts)])
        self.states = self.chain.initial_states()

    async def answer(self, text: str) -> tuple[ChainOutcome, ChainOutcome]:
        """after_response then before_finish for one final answer."""
        message = {"role": "assistant", "content": text}
        after = await self.chain.run(
            Hook.AFTER_RESPONSE, {"message": message}, self.states, self.ctx, NO_IO
        )
        final = await self.chain.run(
            Hook.BEFORE_FINISH, {"message": message}, self.states, self.ctx, NO_IO
        )
        return after, final


def _emitted(outcome: ChainOutcome) -> list[Emit]:
    return [e.emit for e in outcome.emits]


async def test_the_first_final_answer_is_sent_for_review(ctx: PluginContext) -> None:
    session = Reviewed(ctx, criteria=["accuracy", "completeness"])
    _, final = await session.answer("42")
    assert isinstance(final.terminal, Intervene)
    assert "- accuracy\n- completeness" in final.terminal.prompt
    assert "reply with APPROVED" in final.terminal.prompt


async def test_a_passing_review_is_approved_and_the_turn_may_end(ctx: PluginContext) -> None:
    session = Reviewed(ctx)
    await session.answer("42")
    after, final = await session.answer("APPROVED: 42 is right")
    assert _emitted(after) == [
        Emit(
            "reflection_approved",
            {"critique": "APPROVED: 42 is right", "iteration": 1, "forced": False},
        )
    ]
    assert final.terminal is None


async def test_a_failing_review_is_reviewed_again_up_to_max_reviews(ctx: PluginContext) -> None:
    session = Reviewed(ctx, max_reviews=2)
    await session.answer("draft")
    _, second = await session.answer("wrong units; revised: 42 m")
    assert isinstance(second.terminal, Intervene)
    _, last = await session.answer("still unsure: 42 m")
    assert last.terminal is None, "forced through after max_reviews"
    assert _emitted(last) == [
        Emit(
            "reflection_approved",
            {"critique": "still unsure: 42 m", "iteration": 2, "forced": True},
        )
    ]


async def test_a_regex_pass_signal(ctx: PluginContext) -> None:
    session = Reviewed(ctx, pass_signal={"regex": r"^LGTM\b"})
    _, review = await session.answer("draft")
    assert isinstance(review.terminal, Intervene) and "/^LGTM\\b/" in review.terminal.prompt
    after, _ = await session.answer("LGTM, ship it")
    assert _emitted(after)[0].type == "reflection_approved"


async def test_each_turn_is_reviewed_afresh(ctx: PluginContext) -> None:
    session = Reviewed(ctx)
    await session.answer("draft")
    await session.answer("APPROVED")
    await session.chain.run(Hook.AFTER_TURN, {"outcome": "finished"}, session.states, ctx, NO_IO)
    _, final = await session.answer("next turn's answer")
    assert isinstance(final.terminal, Intervene)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"max_reviews": 0}, "max_reviews"),
        ({"max_iterations": "3"}, "max_reviews"),
        ({"pass_signal": ""}, "pass_signal"),
        ({"pass_signal": {"regex": "("}}, "invalid regular expression"),
        ({"criteria": "accuracy"}, "criteria"),
        ({"reviewer_subagent": "yes"}, "reviewer_subagent"),
        ({"reviewer": "x"}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        Reflection(opts)


def test_cmdc_options_are_accepted() -> None:
    plugin = Reflection(
        {"reviewer_model": "qwen3-max", "reviewer_subagent": True, "max_iterations": 5}
    )
    assert plugin.max_reviews == 5 and plugin.priority == 400
