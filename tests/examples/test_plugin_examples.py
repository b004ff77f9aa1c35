"""The plugin recipes of examples/ (skill_guard, cost_guard hot update) on a live fleet."""

from __future__ import annotations

from typing import Any

from examples import cost_guard_update, skill_allowlist
from schemas import Event
from tests.conftest import Harness


def of_type(events: list[Event], type_: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type_]


async def test_skill_allowlist_blocks_tools_outside_the_active_skill(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await skill_allowlist.main(fleet.fleet)
    assert [e["name"] for e in of_type(events, "tool_execution_end")] == ["grep"]
    (blocked,) = of_type(events, "tool_blocked")
    assert blocked["name"] == "write_file" and "grep, read_file, shell" in blocked["reason"]
    assert events[-1].type == "agent_end"


async def test_skill_allowlist_in_warn_mode_only_reports(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await skill_allowlist.main(fleet.fleet, enforce_mode="warn")
    assert [e["name"] for e in of_type(events, "tool_execution_end")] == ["grep", "write_file"]
    kinds = [e["kind"] for e in of_type(events, "plugin_event")]
    assert kinds == ["skill_tool_violation"]


async def test_cost_guard_limit_raised_by_a_hot_update_keeps_the_accrued_cost(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    events = await cost_guard_update.main(fleet.fleet)
    ends = [
        (e.type, e.data.get("reason")) for e in events if e.type in ("agent_end", "agent_abort")
    ]
    assert ends == [
        ("agent_end", "finished"),
        ("agent_abort", "plugin: cost limit reached: $2.0000 of $1.5000"),
        ("agent_abort", "plugin: cost limit reached: $2.0000 of $1.5000"),
        ("agent_end", "finished"),
    ]
    assert [w["accrued_usd"] for w in of_type(events, "cost_warning")] == [1.0]
    updated = of_type(events, "plugin_opts_updated")
    assert updated == [{"plugin": "cost_guard", "success": True, "error": None, "mode": "callback"}]
