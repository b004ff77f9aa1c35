"""CostGuard: the hard limit aborts, the soft warning fires once per threshold, hot updates
keep what has accrued."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.workers.plugins.conftest import NO_IO
from workers.plugins import (
    Abort,
    CostGuard,
    Emit,
    Hook,
    PluginChain,
    PluginContext,
    PluginOptsError,
)


class Session:
    """One guarded session: its chain and plugin states."""

    def __init__(self, **opts: Any) -> None:
        self.chain = PluginChain([CostGuard(opts)])
        self.states = self.chain.initial_states()

    async def respond(self, ctx: PluginContext, cost: float) -> tuple[Any, list[Emit]]:
        outcome = await self.chain.run(
            Hook.AFTER_RESPONSE,
            {"message": {"role": "assistant", "content": "x"}},
            self.states,
            dataclasses.replace(ctx, cost_usd=cost, spent_usd=cost),
            NO_IO,
        )
        return outcome.terminal, [e.emit for e in outcome.emits]


async def test_reaching_max_usd_aborts(ctx: PluginContext) -> None:
    session = Session(max_usd=0.5)
    terminal, _ = await session.respond(ctx, 0.5)
    assert isinstance(terminal, Abort) and "$0.5000 of $0.5000" in terminal.reason


async def test_before_request_refuses_a_request_past_the_limit(ctx: PluginContext) -> None:
    chain = PluginChain([CostGuard({"max_usd": 1.0})])
    outcome = await chain.run(
        Hook.BEFORE_REQUEST,
        {"messages": []},
        {},
        dataclasses.replace(ctx, cost_usd=1.2, spent_usd=1.2),
        NO_IO,
    )
    assert isinstance(outcome.terminal, Abort)


async def test_the_soft_warning_is_sent_once(ctx: PluginContext) -> None:
    session = Session(max_usd=1.0, soft_warning_pct=0.8)
    assert await session.respond(ctx, 0.79) == (None, [])
    terminal, emits = await session.respond(ctx, 0.8)
    assert terminal is None and [e.type for e in emits] == ["cost_warning"]
    assert emits[0].data["accrued_usd"] == 0.8 and emits[0].data["max_usd"] == 1.0
    assert await session.respond(ctx, 0.9) == (None, [])


async def test_a_hot_update_keeps_the_accrued_state_and_warns_at_the_new_threshold(
    ctx: PluginContext,
) -> None:
    session = Session(max_usd=1.0)
    await session.respond(ctx, 0.85)
    mode, error = session.chain.update_opts(
        "cost_guard", {"max_cost_usd": 20.0, "soft_warning_pct": 0.9}, session.states
    )
    assert (mode, error) == ("callback", None)
    assert session.states["cost_guard"]["warnings_sent"] == 1
    assert session.states["cost_guard"]["accrued_usd"] == 0.85
    assert await session.respond(ctx, 5.0) == (None, []), "no longer past the limit"
    _, emits = await session.respond(ctx, 18.0)
    assert emits[0].data["warnings_sent"] == 2


async def test_an_invalid_hot_update_changes_nothing(ctx: PluginContext) -> None:
    session = Session(max_usd=1.0)
    mode, error = session.chain.update_opts("cost_guard", {"max_usd": -1}, session.states)
    assert mode is None and error is not None and "max_usd" in error
    terminal, _ = await session.respond(ctx, 1.0)
    assert isinstance(terminal, Abort)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"max_usd": 0}, "max_usd must be a number > 0"),
        ({"max_usd": "1"}, "max_usd must be a number > 0"),
        ({"soft_warning_pct": 1.5}, "soft_warning_pct"),
        ({"max_usd": 1, "max_cost_usd": 2}, "not both"),
        ({"budget": 1}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        CostGuard(opts)
