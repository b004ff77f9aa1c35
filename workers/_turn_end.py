"""How a turn ends without `agent_end`: aborted (by a command, a plugin or `stop`); and what
follows every turn's end (its audit record, the `after_turn` hook, deferred plugin options)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas import TurnProgress
from workers import _audit, _metrics
from workers._events import now_ms
from workers._plugin_opts import apply_deferred_plugin_opts
from workers._subagents import abort_children, report_to_parent
from workers.plugins import Hook

if TYPE_CHECKING:
    from workers._actor import SessionActor


async def end_aborted(
    actor: SessionActor, reason: str, *, rollback: bool = False, stopping: bool = False
) -> None:
    """End the current turn with `agent_abort`: results so far stay in the history
    (unless `rollback`), unfinished calls are marked aborted, pending waits are dropped.
    `stopping`: the session is being stopped (a sub-agent need not stop itself then)."""
    state = actor.state
    assert state is not None and state.current is not None
    current = state.current
    if rollback:
        actor.truncate_history(current.history_start)
    else:
        for record in current.batch:
            actor.append_message(
                {
                    "role": "tool_result",
                    "call_id": record.call_id,
                    "name": record.name,
                    "content": record.result if record.status == "done" else f"aborted: {reason}",
                    "is_error": record.is_error or record.status != "done",
                }
            )
    abort_children(actor, reason=reason)
    state.pending_approvals = []
    state.pending_questions = []
    state.steering_queue = []
    state.current = None
    state.status = "idle"
    report_to_parent(actor, ok=False, text=f"aborted: {reason}", error=None, stopping=stopping)
    await actor.save()
    await actor.emit("agent_abort", {"reason": reason}, request_id=current.request_id)
    await actor.flush_outbox()
    actor.arm_timers()
    _metrics.ABORTS.labels("plugin" if reason.startswith("plugin:") else "command").inc()
    await after_turn(actor, current, outcome="aborted", abort_reason=reason)


async def after_turn(
    actor: SessionActor,
    current: TurnProgress,
    *,
    outcome: str,
    abort_reason: str | None = None,
    reason: str | None = None,
) -> None:
    """The turn's audit record, the `after_turn` hook, then plugin options deferred while
    the turn ran. `reason` is agent_end's (finished, max_turns, rejected, error)."""
    state = actor.state
    assert state is not None
    ended = now_ms()
    await _audit.turn_stopped(
        actor, current, outcome=outcome, reason=reason or abort_reason, ended_ms=ended
    )
    await actor.hooks.run(
        Hook.AFTER_TURN,
        {
            "outcome": outcome,
            "abort_reason": abort_reason,
            "messages_diff": actor.history[current.history_start :],
            "usage_diff": current.usage.model_dump(),
            "started_at_ms": current.started_ms,
            "ended_at_ms": ended,
            "duration_ms": ended - current.started_ms,
        },
        request_id=current.request_id,
    )
    if state.deferred_plugin_opts and state.current is None:
        await apply_deferred_plugin_opts(actor)
