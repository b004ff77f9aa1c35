"""The audit records of a session (schemas.AuditEvent v2): turns, approvals, model switches,
checkpoints. Each function builds one record from the actor's state and publishes it through
the worker's `AuditPublisher`, which never raises and does nothing when audit is disabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from schemas import ActorType, AuditEvent, PendingApproval, SessionState, TurnProgress

if TYPE_CHECKING:
    from workers._actor import SessionActor


def model_of(state: SessionState) -> dict[str, Any]:
    """What a model switch changes, as `before` / `after` (secrets redacted by the record)."""
    return {"model": state.model, "provider_opts": dict(state.provider_opts)}


async def _record(
    actor: SessionActor,
    action: str,
    *,
    actor_type: ActorType = "agent",
    actor_id: str | None = None,
    target_type: str = "agent_session",
    target_id: str | None = None,
    before: Any = None,
    after: Any = None,
    metadata: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    publisher = actor.ctx.audit
    state = actor.state
    if not publisher.enabled or state is None:
        return
    tags = [f"tenant:{state.tenant}", "via:worker"]
    if state.group:
        tags.append(f"group:{state.group}")
    await publisher.publish(
        AuditEvent(
            action=action,
            actor_type=actor_type,
            actor_id=actor.sid if actor_type == "agent" and actor_id is None else actor_id,
            target_type=target_type,
            target_id=actor.sid if target_id is None else target_id,
            tenant=state.tenant,
            before=before,
            after=after,
            metadata={
                "session_id": actor.sid,
                "turn": state.turns,
                "request_id": request_id,
                "worker": actor.ctx.worker_id,
                **(metadata or {}),
            },
            tags=tags,
        )
    )


async def turn_started(actor: SessionActor, request_id: str | None) -> None:
    state = actor.state
    assert state is not None
    await _record(actor, "agent.turn.start", request_id=request_id, metadata={"model": state.model})


async def turn_stopped(
    actor: SessionActor, current: TurnProgress, *, outcome: str, reason: str | None, ended_ms: int
) -> None:
    """`outcome` is finished or aborted; `reason` the agent_end reason or the abort's."""
    await _record(
        actor,
        "agent.turn.stop",
        request_id=current.request_id,
        metadata={
            "turn": current.turn,
            "outcome": outcome,
            "reason": reason,
            "steps": current.step,
            "duration_ms": ended_ms - current.started_ms,
            "usage": current.usage.model_dump(),
        },
    )


async def approval_requested(
    actor: SessionActor, approval: PendingApproval, request_id: str | None
) -> None:
    await _record(
        actor,
        "approval.requested",
        target_type="approval",
        target_id=approval.approval_id,
        after={"status": "pending"},
        metadata={
            "tool": approval.tool,
            "call_id": approval.call_id,
            "args": approval.args,
            "hint": approval.hint,
            "expires_ms": approval.expires_ms,
        },
        request_id=request_id,
    )


async def approval_resolved(
    actor: SessionActor,
    approval: PendingApproval,
    *,
    status: str,
    kind: str | None,
    timed_out: bool,
    request_id: str | None,
) -> None:
    """Resolved by the client's command, or by the system when its timeout expired."""
    await _record(
        actor,
        "approval.resolved",
        actor_type="system" if timed_out else "user",
        actor_id="approval_timeout" if timed_out else None,
        target_type="approval",
        target_id=approval.approval_id,
        before={"status": "pending"},
        after={"status": status, "kind": kind},
        metadata={"tool": approval.tool, "call_id": approval.call_id},
        request_id=request_id,
    )


async def model_switched(
    actor: SessionActor,
    before: dict[str, Any],
    *,
    by: ActorType,
    request_id: str | None,
) -> None:
    """`before` is `model_of(state)` taken before the switch; `by` the user or a plugin."""
    state = actor.state
    assert state is not None
    await _record(
        actor,
        "agent.model.switch",
        actor_type=by,
        before=before,
        after=model_of(state),
        request_id=request_id,
    )


async def checkpoint_saved(
    actor: SessionActor,
    checkpoint_id: str,
    *,
    label: str | None,
    size: int,
    by: ActorType,
    trigger: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    await _record(
        actor,
        "checkpoint.save",
        actor_type=by,
        target_type="checkpoint",
        target_id=checkpoint_id,
        after={"label": label, "bytes": size},
        metadata={"trigger": trigger} if trigger else None,
        request_id=request_id,
    )
