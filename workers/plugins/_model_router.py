"""ModelRouter (CMDC built-in, priority 150): picks the model of each LLM request by rules.

At `before_request` the first rule whose condition holds switches the model (and, if the rule
says so, its provider options); when none holds, `default_model` (if set) is used. The engine
publishes `model_switched` with reason "plugin" when the model really changes.

A rule is `{"condition": [name, *args], "model": "...", "provider_opts": {...}?}`, the JSON
form of CMDC's tuples (`{:turn_gt, 20}` is `["turn_gt", 20]`):

    ["turn_gt", n]                   the session's turn number > n
    ["cost_gt", usd]                 the session's cost so far > usd
    ["tokens_gt", n]                 the session's total tokens > n
    ["token_budget_lt", n]           user_data.token_budget - total tokens < n
    ["task_complexity", v]           user_data.task_complexity == v
    ["task_complexity_in", [v...]]   user_data.task_complexity in the list
    ["time_of_day_in", [[a, b]...]]  the UTC hour lies in one of the inclusive ranges a..b
    ["user_tier", v]                 user_data.user_tier == v
    ["user_tier_in", [v...]]         user_data.user_tier in the list
    ["user_data", key, v]            user_data[key] == v
    ["user_data", key, op, v]        user_data[key] op v, op one of gt, lt, gte, lte, eq

A missing or non-numeric user_data value makes a numeric condition false. The seeds give no
priority for ModelRouter; 150 puts it after PromptCache (130) and before Planning (200).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from workers.plugins._base import (
    Action,
    Hook,
    Plugin,
    PluginContext,
    PluginOptsError,
    SwitchModel,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset({"rules", "default_model"})
_RULE_KEYS = frozenset({"condition", "model", "provider_opts"})
_COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "lt": operator.lt,
    "gte": operator.ge,
    "lte": operator.le,
    "eq": operator.eq,
}
_NUMERIC = ("turn_gt", "cost_gt", "tokens_gt", "token_budget_lt")
_EQUALS = {"task_complexity": "task_complexity", "user_tier": "user_tier"}
_MEMBER = {"task_complexity_in": "task_complexity", "user_tier_in": "user_tier"}

Condition = Callable[[PluginContext, int], bool]
"""A compiled condition: (context, UTC hour) -> holds."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule: when `holds`, use `model` (with `provider_opts`)."""

    holds: Condition
    model: str
    provider_opts: dict[str, Any] | None


class ModelRouter(Plugin):
    """Switches the model at `before_request` by the first matching rule."""

    name = "model_router"
    priority = 150
    aliases = ("CMDC.Plugin.Builtin.ModelRouter",)

    rules: tuple[Rule, ...]
    default_model: str | None

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("model_router", opts, _OPTS)
        raw_rules = opts.get("rules", [])
        if not isinstance(raw_rules, list | tuple):
            raise PluginOptsError("model_router: rules must be a list")
        rules = tuple(_rule(raw, i) for i, raw in enumerate(raw_rules))
        default = opts.get("default_model")
        if default is not None and not _model_name(default):
            raise PluginOptsError("model_router: default_model must be 'provider:model' or null")
        self.rules = rules
        self.default_model = default

    def now(self) -> datetime:
        """The time `time_of_day_in` reads."""
        return datetime.now(UTC)

    def choose(self, ctx: PluginContext) -> tuple[str, dict[str, Any] | None] | None:
        """The (model, provider_opts) for the next request, or None to leave it as it is."""
        hour = self.now().astimezone(UTC).hour
        for rule in self.rules:
            if rule.holds(ctx, hour):
                return rule.model, rule.provider_opts
        return (self.default_model, None) if self.default_model else None

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if hook is not Hook.BEFORE_REQUEST:
            return None
        choice = self.choose(ctx)
        if choice is None:
            return None
        model, provider_opts = choice
        if model == ctx.model and provider_opts is None:
            return None
        return SwitchModel(model, provider_opts)


def _rule(raw: object, index: int) -> Rule:
    where = f"model_router: rules[{index}]"
    if not isinstance(raw, Mapping) or not set(raw) <= _RULE_KEYS:
        raise PluginOptsError(f"{where} must be an object with condition, model, provider_opts")
    model = raw.get("model")
    if not _model_name(model):
        raise PluginOptsError(f"{where}.model must be 'provider:model'")
    provider_opts = raw.get("provider_opts")
    if provider_opts is not None and not isinstance(provider_opts, Mapping):
        raise PluginOptsError(f"{where}.provider_opts must be an object")
    condition = raw.get("condition")
    if not isinstance(condition, list | tuple) or not condition:
        raise PluginOptsError(f"{where}.condition must be a list [name, *args]")
    name, args = condition[0], list(condition[1:])
    try:
        holds = _condition(name, args)
    except (TypeError, ValueError) as exc:
        raise PluginOptsError(f"{where}.condition {list(condition)!r}: {exc}") from None
    assert isinstance(model, str)
    return Rule(holds, model, dict(provider_opts) if provider_opts is not None else None)


def _condition(name: object, args: list[Any]) -> Condition:
    if name in _NUMERIC:
        (limit,) = _arity(args, 1)
        bound = _number(limit)
        match name:
            case "turn_gt":
                return lambda ctx, _h: ctx.turn > bound
            case "cost_gt":
                return lambda ctx, _h: ctx.cost_usd > bound
            case "tokens_gt":
                return lambda ctx, _h: ctx.total_tokens > bound
            case _:
                return lambda ctx, _h: _budget_left(ctx) < bound
    if isinstance(name, str) and name in _EQUALS:
        key, (value,) = _EQUALS[name], _arity(args, 1)
        return lambda ctx, _h: ctx.user_data.get(key) == value
    if isinstance(name, str) and name in _MEMBER:
        key, (values,) = _MEMBER[name], _arity(args, 1)
        members = _values(values)
        return lambda ctx, _h: _member(ctx.user_data.get(key), members)
    if name == "time_of_day_in":
        (ranges,) = _arity(args, 1)
        hours = _hours(ranges)
        return lambda _ctx, hour: hour in hours
    if name == "user_data":
        return _user_data(args)
    raise ValueError(f"unknown condition {name!r}")


def _user_data(args: list[Any]) -> Condition:
    if len(args) == 2:
        key, value = args
        _key(key)
        return lambda ctx, _h: ctx.user_data.get(key) == value
    if len(args) == 3:
        key, op, value = args
        _key(key)
        compare = _COMPARISONS.get(op) if isinstance(op, str) else None
        if compare is None:
            raise ValueError(f"op must be one of {sorted(_COMPARISONS)}, not {op!r}")
        if op != "eq":
            _number(value)
        return lambda ctx, _h: _compare(compare, ctx.user_data.get(key), value)
    raise ValueError("user_data takes [key, value] or [key, op, value]")


def _compare(compare: Callable[[Any, Any], bool], actual: object, expected: object) -> bool:
    if compare is operator.eq:
        return actual == expected
    if not _is_number(actual):
        return False
    return compare(actual, expected)


def _budget_left(ctx: PluginContext) -> float:
    budget = ctx.user_data.get("token_budget")
    if not _is_number(budget):
        return float("inf")  # no budget: never "below"
    assert isinstance(budget, int | float)
    return budget - ctx.total_tokens


def _member(value: object, members: Sequence[object]) -> bool:
    return any(value == member for member in members)


def _arity(args: list[Any], count: int) -> list[Any]:
    if len(args) != count:
        raise ValueError(f"expected {count} argument(s), got {len(args)}")
    return args


def _number(value: object) -> float:
    if not _is_number(value):
        raise TypeError(f"{value!r} is not a number")
    assert isinstance(value, int | float)
    return float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _values(value: object) -> list[object]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"{value!r} is not a list")
    return list(value)


def _key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"user_data key {key!r} is not a non-empty string")


def _hours(ranges: object) -> frozenset[int]:
    """The hours covered by [[a, b], ...] (inclusive, 0-23; a > b wraps past midnight)."""
    hours: set[int] = set()
    for span in _values(ranges):
        if (
            not isinstance(span, list | tuple)
            or len(span) != 2
            or not all(isinstance(h, int) and not isinstance(h, bool) for h in span)
            or not all(0 <= h <= 23 for h in span)
        ):
            raise ValueError(f"an hour range is [first, last] with hours 0-23, not {span!r}")
        first, last = span
        hours.update(
            range(first, last + 1) if first <= last else [*range(first, 24), *range(last + 1)]
        )
    return frozenset(hours)


def _model_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    provider, sep, model = value.partition(":")
    return bool(provider and sep and model)
