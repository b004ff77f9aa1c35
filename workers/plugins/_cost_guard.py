"""CostGuard (CMDC built-in, priority 200): a hard cost limit and a soft warning per session.

Once the session's spend reaches `max_usd` the turn is aborted; once it reaches
`max_usd * soft_warning_pct` a `cost_warning` event is published, once per threshold (a hot
update that moves the threshold may warn again). The spend is the session's own cost plus
its sub-agents' (a sub-agent runs under its parent's cost_guard, starting from what the
parent had spent: PROTOCOL §6.11). The cost is checked at
`after_response`, as in CMDC, and at `before_request`: the engine counts a response's cost
after `after_response`, so `before_request` is where a response's own cost first shows, and
no request is sent past the limit.

A hot update (`update_plugin_opts`) goes through `on_config_update` (mode "callback", seeds/000
recipe 15): the new limits apply and the accrued cost and the warnings already sent are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.plugins._base import (
    Abort,
    Action,
    Emit,
    Hook,
    Plugin,
    PluginContext,
    PluginOptsError,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset({"max_usd", "max_cost_usd", "soft_warning_pct"})
DEFAULT_MAX_USD = 5.0
DEFAULT_SOFT_WARNING_PCT = 0.8


class CostGuard(Plugin):
    """Aborts a session's turn past `max_usd`; warns at `soft_warning_pct` of it."""

    name = "cost_guard"
    priority = 200
    aliases = ("CMDC.Plugin.Builtin.CostGuard",)

    max_usd: float
    soft_warning_pct: float

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("cost_guard", opts, _OPTS)
        if "max_usd" in opts and "max_cost_usd" in opts:
            raise PluginOptsError("cost_guard: give max_usd or its alias max_cost_usd, not both")
        max_usd = _number(opts.get("max_usd", opts.get("max_cost_usd", DEFAULT_MAX_USD)))
        if max_usd is None or max_usd <= 0:
            raise PluginOptsError("cost_guard: max_usd must be a number > 0")
        pct = _number(opts.get("soft_warning_pct", DEFAULT_SOFT_WARNING_PCT))
        if pct is None or not 0.0 <= pct <= 1.0:
            raise PluginOptsError("cost_guard: soft_warning_pct must be a number from 0 to 1")
        self.max_usd = max_usd
        self.soft_warning_pct = pct

    def on_config_update(self, opts: Mapping[str, Any], state: dict[str, Any]) -> bool:
        merged = dict(self.opts)
        if "max_usd" in opts or "max_cost_usd" in opts:  # either name replaces the other
            merged.pop("max_usd", None)
            merged.pop("max_cost_usd", None)
        self.configure({**merged, **opts})  # raises before changing anything
        self.opts = merged  # the base class merges `opts` over it
        return True  # `state` (accrued cost, warnings sent) is kept as it is

    def initial_state(self) -> dict[str, Any]:
        return {"accrued_usd": 0.0, "warnings_sent": 0, "warned_at_usd": None}

    @property
    def warning_usd(self) -> float:
        """The cost at which the soft warning is published."""
        return self.max_usd * self.soft_warning_pct

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if hook not in (Hook.AFTER_RESPONSE, Hook.BEFORE_REQUEST):
            return None
        accrued = ctx.spent_usd  # a sub-agent's spend counts against its parent's budget
        state["accrued_usd"] = accrued
        if accrued >= self.max_usd:
            return Abort(f"cost limit reached: ${accrued:.4f} of ${self.max_usd:.4f}")
        threshold = self.warning_usd
        if accrued >= threshold and state.get("warned_at_usd") != threshold:
            state["warned_at_usd"] = threshold
            state["warnings_sent"] = int(state.get("warnings_sent", 0)) + 1
            return Emit(
                "cost_warning",
                {
                    "accrued_usd": accrued,
                    "max_usd": self.max_usd,
                    "soft_warning_pct": self.soft_warning_pct,
                    "warnings_sent": state["warnings_sent"],
                },
            )
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
