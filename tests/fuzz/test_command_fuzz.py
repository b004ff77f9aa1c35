"""The short form of the command campaign (`python -m ops.fuzz commands` is the long one):
hostile commands and tool-call arguments against a worker process, valid traffic beside."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ops.fuzz._commands import FuzzTarget, run_commands
from tests.conftest import Harness


async def test_hostile_commands_are_refused_and_harm_nothing(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    worker = harness.spawn_worker("fz1")
    await harness.wait_all_shards({"fz1"})
    assert harness.nc is not None
    target = FuzzTarget(
        settings=harness.settings,
        nc=harness.nc,
        worker_logs=[harness.tmp / "fz1.log"],
        workers_alive=lambda: int(worker.process.poll() is None),
        workers=1,
    )
    figures = await run_commands(
        target,
        count=1_500,
        seed=12,
        canaries=4,
        prompts_per_canary=10,
        tool_sessions=6,
        calls_per_session=8,
    )
    assert figures.hostile_sent == 1_500 and figures.expected_dead_letters > 1_000
    assert figures.missing_dead_letters == [] and figures.unexpected_codes == []
    assert figures.canary_failures == [] and figures.canary_prompts == 40
    assert figures.tool_turns_finished == 6
    assert (figures.worker_crashes, figures.worker_tracebacks) == (0, 0)
    assert figures.pending_commands == 0
    assert set(figures.dead_letters) >= {"invalid_command", "session_not_found", "too_large"}
