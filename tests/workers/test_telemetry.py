"""CMDC's telemetry events as the worker's Prometheus metrics: each moves when the engine
does the corresponding thing (read in-process from the default registry)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from flotilla import CommandError, Session
from tests.conftest import Harness, eventually
from tests.engine_helpers import call, script, until, until_end

PLUGIN = "tests.workers.scripted_plugin:ScriptedPlugin"


class Baseline:
    """Every metric sample as it was when made; `moved` reads how far one went since."""

    def __init__(self) -> None:
        self._before = self._samples()

    @staticmethod
    def _samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for metric in REGISTRY.collect()
            for s in metric.samples
        }

    def delta(self, name: str, **labels: str) -> float:
        now = REGISTRY.get_sample_value(name, labels) or 0.0
        return now - self._before.get((name, frozenset(labels.items())), 0.0)

    async def moved(self, name: str, by: float = 1, **labels: str) -> float:
        """Wait until the sample moved by at least `by`; how far it moved."""
        await eventually(lambda: self.delta(name, **labels) >= by, what=f"{name}{labels}")
        return self.delta(name, **labels)


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    extra = options.pop("script_extra", {})
    return await fleet.fleet.create_agent(
        model="mock:script", provider_opts=script(*steps, **extra), **options
    )


async def test_an_llm_request_counts_its_duration_tokens_and_cost(fleet: Harness) -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "cached_tokens": 2}
    price = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 2_000_000.0}
    session = await _session(fleet, {"text": "hi", "usage": usage}, script_extra={"price": price})
    base = Baseline()
    await session.prompt("go")
    await until_end(session)
    assert await base.moved("flotilla_worker_turns_started_total") == 1
    assert await base.moved("flotilla_worker_llm_requests_started_total", provider="mock") == 1
    seconds = "flotilla_worker_llm_request_seconds_count"
    assert await base.moved(seconds, provider="mock", outcome="ok") == 1
    tokens = "flotilla_worker_llm_tokens_total"
    assert await base.moved(tokens, 7, provider="mock", kind="prompt") == 7
    assert await base.moved(tokens, 3, provider="mock", kind="completion") == 3
    assert await base.moved(tokens, 2, provider="mock", kind="cached") == 2
    assert await base.moved("flotilla_worker_llm_cost_usd_total", 13, provider="mock") == 13


async def test_a_failed_llm_request_is_timed_and_counted_by_its_code(fleet: Harness) -> None:
    session = await _session(fleet, {"error": "rate_limit"}, {"text": "ok"})
    base = Baseline()
    await session.prompt("go")
    await until_end(session)
    errors = "flotilla_worker_llm_errors_total"
    assert await base.moved(errors, provider="mock", code="rate_limit") == 1
    seconds = "flotilla_worker_llm_request_seconds_count"
    assert await base.moved(seconds, provider="mock", outcome="error") == 1
    assert await base.moved(seconds, provider="mock", outcome="ok") == 1
    assert await base.moved("flotilla_worker_llm_requests_started_total", 2, provider="mock") == 2


async def test_a_tool_call_is_counted_when_it_starts_and_when_it_ends(fleet: Harness) -> None:
    write = call("write_file", path="a.txt", content="x")
    session = await _session(fleet, {"tool_calls": [write]}, {"text": "done"}, tools=["write_file"])
    base = Baseline()
    await session.prompt("go")
    await until_end(session)
    assert await base.moved("flotilla_worker_tool_calls_started_total", tool="write_file") == 1
    assert await base.moved("flotilla_worker_tool_seconds_count", tool="write_file") == 1
    calls = "flotilla_worker_tool_calls_total"
    assert await base.moved(calls, tool="write_file", status="ok") == 1


async def test_the_plugin_chain_is_timed_per_hook_and_its_crashes_counted(
    harness_factory: Any,
) -> None:
    fleet = await (await harness_factory(custom_plugins=(PLUGIN,))).start_fleet("w1")
    opts = {
        "crash_on": ["after_response"],
        "actions": {"before_finish": {"kind": "intervene", "prompt": "more"}},
    }
    session = await _session(
        fleet, {"text": "a"}, {"text": "b"}, plugins=[{"name": "scripted", "opts": opts}]
    )
    base = Baseline()
    await session.prompt("go")
    await until_end(session)
    started = "flotilla_worker_plugin_pipelines_started_total"
    assert await base.moved(started, 2, hook="before_request") == 2
    seconds = "flotilla_worker_plugin_pipeline_seconds_count"
    assert await base.moved(seconds, hook="before_finish", outcome="intervene") == 1
    assert await base.moved(seconds, hook="before_finish", outcome="continue") == 1
    assert await base.moved(seconds, hook="after_turn", outcome="continue") == 1
    assert await base.moved("flotilla_worker_plugin_incidents_total", 2, kind="crash") == 2


async def test_a_compaction_counts_its_run_ratio_and_removed_messages(fleet: Harness) -> None:
    earlier = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i}" * 20}
        for i in range(10)
    ]
    session = await _session(
        fleet,
        {"tool_calls": [call("compact_conversation", reason="too long")]},
        {"text": "lighter now"},
        tools=["compact_conversation"],
        messages=earlier,
    )
    base = Baseline()
    await session.prompt("go on")
    await until_end(session)
    assert await base.moved("flotilla_worker_compactor_runs_total", trigger="requested") == 1
    assert await base.moved("flotilla_worker_compactor_removed_messages_total", 6) == 6
    assert await base.moved("flotilla_worker_compactor_ratio_count") == 1
    assert 0 < base.delta("flotilla_worker_compactor_ratio_sum") < 1


async def test_checkpoints_count_their_size_and_their_loads(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await _session(fleet, {"text": "x"})
    base = Baseline()
    command_id = await session.send("checkpoint", label="one")
    saved = (await until(session, "checkpoint_saved"))[-1]
    assert saved.request_id == command_id
    assert await base.moved("flotilla_worker_checkpoints_total") == 1
    assert await base.moved("flotilla_worker_checkpoint_bytes_count") == 1
    assert base.delta("flotilla_worker_checkpoint_bytes_sum") == saved.data["bytes"]
    ref = {"session_id": session.sid, "checkpoint_id": saved.data["checkpoint_id"]}
    await fleet.fleet.create_agent(model="mock:echo", from_checkpoint=ref)
    with pytest.raises(CommandError):
        await fleet.fleet.create_agent(
            model="mock:echo", from_checkpoint={**ref, "checkpoint_id": "ck-none"}
        )
    assert await base.moved("flotilla_worker_checkpoint_loads_total", outcome="hit") == 1
    assert await base.moved("flotilla_worker_checkpoint_loads_total", outcome="miss") == 1


async def test_a_sub_agent_is_counted_when_spawned_and_when_its_result_arrives(
    fleet: Harness,
) -> None:
    child = {
        "name": "researcher",
        "description": "looks things up",
        "model": "mock:script",
        "provider_opts": {"script": [{"text": "found"}]},
    }
    task = call("task", description="find it", subagent_type="researcher")
    session = await _session(
        fleet, {"tool_calls": [task]}, {"text": "done"}, tools=["task"], subagents=[child]
    )
    base = Baseline()
    await session.prompt("delegate")
    await until_end(session)
    assert await base.moved("flotilla_worker_subagents_total") == 1
    assert await base.moved("flotilla_worker_subagents_ended_total", status="ok") == 1


async def test_hibernation_is_counted_and_its_configuration_observed(fleet: Harness) -> None:
    base = Baseline()
    session = await _session(fleet, {"text": "x"}, hibernate_after_ms=60_000)
    await _session(fleet, {"text": "y"})
    configured = "flotilla_worker_hibernate_after_seconds"
    assert await base.moved(f"{configured}_count", source="session") == 1
    assert base.delta(f"{configured}_sum", source="session") == 60
    assert await base.moved(f"{configured}_count", source="fleet") == 1
    command_id = await session.hibernate()
    await session.wait_for({"session_hibernated"}, request_id=command_id, timeout=5)
    assert await base.moved("flotilla_worker_hibernations_total") == 1
