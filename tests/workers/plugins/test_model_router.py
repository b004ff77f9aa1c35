"""ModelRouter: the first matching rule picks the model; every CMDC condition; bad rules."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.workers.plugins.conftest import NO_IO
from workers.plugins import (
    Hook,
    ModelRouter,
    PluginChain,
    PluginContext,
    PluginOptsError,
    SwitchModel,
    load_plugins,
)

SMALL, BIG = "openai:gpt-4.1-mini", "anthropic:claude-opus-4"


def _rule(*condition: Any, model: str = SMALL) -> dict[str, Any]:
    return {"condition": list(condition), "model": model}


async def _switch(router: ModelRouter, ctx: PluginContext, **changes: Any) -> SwitchModel | None:
    outcome = await PluginChain([router]).run(
        Hook.BEFORE_REQUEST, {"messages": []}, {}, dataclasses.replace(ctx, **changes), NO_IO
    )
    return outcome.switch_model


@pytest.mark.parametrize(
    ("condition", "changes"),
    [
        (["turn_gt", 20], {"turn": 21}),
        (["cost_gt", 0.5], {"cost_usd": 0.51}),
        (["tokens_gt", 50_000], {"total_tokens": 50_001}),
        (
            ["token_budget_lt", 5_000],
            {"total_tokens": 96_000, "user_data": {"token_budget": 100_000}},
        ),
        (["task_complexity", "complex"], {"user_data": {"task_complexity": "complex"}}),
        (["task_complexity_in", ["simple", "easy"]], {"user_data": {"task_complexity": "easy"}}),
        (["user_tier", "free"], {"user_data": {"user_tier": "free"}}),
        (["user_tier_in", ["enterprise"]], {"user_data": {"user_tier": "enterprise"}}),
        (["user_data", "region", "eu-west"], {"user_data": {"region": "eu-west"}}),
        (["user_data", "priority", "gt", 5], {"user_data": {"priority": 6}}),
        (["user_data", "priority", "lte", 5], {"user_data": {"priority": 5}}),
    ],
)
async def test_each_condition_switches_when_it_holds_and_not_otherwise(
    ctx: PluginContext, condition: list[Any], changes: dict[str, Any]
) -> None:
    router = ModelRouter({"rules": [_rule(*condition)]})
    assert await _switch(router, ctx, **changes) == SwitchModel(SMALL)
    assert await _switch(router, ctx) is None


async def test_token_budget_needs_a_numeric_budget(ctx: PluginContext) -> None:
    router = ModelRouter({"rules": [_rule("token_budget_lt", 5_000)]})
    assert await _switch(router, ctx, total_tokens=10**9) is None
    assert await _switch(router, ctx, user_data={"token_budget": "lots"}) is None


async def test_comparisons_on_a_non_number_do_not_hold(ctx: PluginContext) -> None:
    router = ModelRouter({"rules": [_rule("user_data", "priority", "gt", 5)]})
    assert await _switch(router, ctx, user_data={"priority": "high"}) is None


@pytest.mark.parametrize(
    ("hour", "holds"), [(22, True), (23, True), (3, True), (7, False), (21, False)]
)
async def test_time_of_day_uses_utc_hour_ranges(
    ctx: PluginContext, monkeypatch: pytest.MonkeyPatch, hour: int, holds: bool
) -> None:
    router = ModelRouter({"rules": [_rule("time_of_day_in", [[22, 23], [0, 6]])]})
    monkeypatch.setattr(router, "now", lambda: datetime(2025, 1, 1, hour, 30, tzinfo=UTC))
    assert (await _switch(router, ctx) is not None) is holds


async def test_the_first_matching_rule_wins(ctx: PluginContext) -> None:
    router = ModelRouter(
        {
            "rules": [
                _rule("user_tier", "pro", model=BIG),
                _rule("turn_gt", 0),
                _rule("turn_gt", -1, model=BIG),
            ]
        }
    )
    assert await _switch(router, ctx) == SwitchModel(SMALL)


async def test_default_model_applies_when_no_rule_holds(ctx: PluginContext) -> None:
    router = ModelRouter({"default_model": BIG, "rules": [_rule("turn_gt", 20)]})
    assert await _switch(router, ctx) == SwitchModel(BIG)
    assert await _switch(router, ctx, model=BIG) is None, "already on it: nothing to switch"


async def test_a_rule_may_carry_provider_opts(ctx: PluginContext) -> None:
    rule = {**_rule("turn_gt", 0), "provider_opts": {"base_url": "http://fallback"}}
    router = ModelRouter({"rules": [rule]})
    assert await _switch(router, ctx, model=SMALL) == SwitchModel(
        SMALL, {"base_url": "http://fallback"}
    )


async def test_other_hooks_are_left_alone(ctx: PluginContext) -> None:
    router = ModelRouter({"rules": [_rule("turn_gt", 0)]})
    assert router.handle(Hook.AFTER_RESPONSE, {"message": {}}, {}, ctx) is None


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"rules": [_rule("moon_phase", "full")]}, "unknown condition 'moon_phase'"),
        ({"rules": [_rule("turn_gt", "many")]}, "is not a number"),
        ({"rules": [_rule("turn_gt")]}, "expected 1 argument"),
        ({"rules": [_rule("user_data", "p", "between", 5)]}, "op must be one of"),
        ({"rules": [_rule("time_of_day_in", [[22, 25]])]}, "hours 0-23"),
        ({"rules": [_rule("turn_gt", 1, model="gpt-4")]}, "model must be 'provider:model'"),
        ({"rules": [{"condition": "turn_gt", "model": SMALL}]}, "condition must be a list"),
        ({"rules": {}}, "rules must be a list"),
        ({"default_model": 3}, "default_model"),
        ({"routes": []}, "unknown options"),
    ],
)
def test_bad_options_are_refused(opts: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginOptsError, match=message):
        ModelRouter(opts)


def test_it_loads_under_its_cmdc_name() -> None:
    (plugin,) = load_plugins([{"name": "CMDC.Plugin.Builtin.ModelRouter", "opts": {}}])
    assert isinstance(plugin, ModelRouter) and plugin.priority == 150
