"""The plugin recipes of examples/ (3, 6.1, 9) run against a live fleet."""

from __future__ import annotations

from typing import Any

from examples import auto_checkpoint, content_policy, memory_loop
from schemas import Event
from tests.conftest import Harness


def _plugin_events(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [
        e.data["payload"] for e in events if e.type == "plugin_event" and e.data["kind"] == kind
    ]


async def test_memory_flushed_at_compaction_is_loaded_by_the_resumed_session(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    events = await memory_loop.main(fleet.fleet, stop=False)
    assert events[-1].type == "agent_end"
    (loaded,) = _plugin_events(events, "memory_loaded")
    assert loaded["files"] == ["MEMORY.md"]
    memory = (await fleet.state(events[-1].sid))["system_context"]["memory"]
    assert f"- {memory_loop.PREFERENCE}" in memory


async def test_auto_checkpoints_fire_on_the_tool_every_n_turns_and_at_the_end(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    events = await auto_checkpoint.main(fleet.fleet)
    saved = _plugin_events(events, "auto_checkpoint_saved")
    assert tuple(s["trigger"] for s in saved) == auto_checkpoint.TRIGGERS
    checkpoints = [e.data for e in events if e.type == "checkpoint_saved"]
    assert [c["checkpoint_id"] for c in checkpoints] == [s["checkpoint_id"] for s in saved]
    assert {c["label"] for c in checkpoints} == {"auto"}
    assert events[-1].type == "session_stopped"


async def test_the_judge_allows_then_after_an_update_blocks(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await content_policy.main(fleet.fleet)
    ends = [e for e in events if e.type == "agent_end"]
    assert ends[0].data["last_message"]["content"] == content_policy.ANSWER
    assert [e.data["success"] for e in events if e.type == "plugin_opts_updated"] == [True]
    assert events[-1].type == "prompt_rejected"
    assert events[-1].data["reason"] == "plugin: content_policy: off-brand"
