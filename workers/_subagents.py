"""Sub-agents: the `task` tool runs a child as a fleet session of its own.

The parent saves a `create` for the child in its outbox (published after the save, so a lost
worker cannot lose or double it: the command id is derived from the call), marks the call as
waiting and suspends its turn without holding a slot. The child starts its task at `create`;
when its turn ends it sends `respond{ref}` to the parent the same way, which resumes the
parent. A child's failure is an error tool result for the parent, never a parent crash.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from schemas import OutboxCommand, PendingQuestion, SubAgentSpec, ToolCallRecord
from workers import _metrics
from workers.tools import SubagentEffect

if TYPE_CHECKING:
    from workers._actor import SessionActor

GENERAL = "general-purpose"


def child_sid(parent_sid: str, call_id: str) -> str:
    """A stable id per (parent, call): the same call always names the same child."""
    digest = hashlib.sha256(f"{parent_sid}\0{call_id}".encode()).hexdigest()[:12]
    return f"{parent_sid[:48]}-{digest}"


def _spec(actor: SessionActor, kind: str | None) -> SubAgentSpec | str:
    state = actor.state
    assert state is not None
    specs = state.options.subagents
    if kind in (None, "", GENERAL):
        named = next((s for s in specs if s.name == GENERAL), None)
        return named or SubAgentSpec(name=GENERAL, description="a general-purpose agent")
    found = next((s for s in specs if s.name == kind), None)
    if found is None:
        available = ", ".join([GENERAL, *(s.name for s in specs)])
        return f"unknown sub-agent type {kind!r}; available: {available}"
    return found


async def spawn(
    actor: SessionActor, record: ToolCallRecord, effect: SubagentEffect, *, request_id: str | None
) -> str | None:
    """Start the child for a `task` call; the reason it cannot, if it cannot."""
    state = actor.state
    assert state is not None
    spec = _spec(actor, effect.subagent_type)
    if isinstance(spec, str):
        return spec
    depth = state.depth + 1
    if depth > actor.settings.subagent_max_depth:
        return (
            f"sub-agents may nest {actor.settings.subagent_max_depth} deep; this one would be "
            f"at depth {depth}"
        )
    child = child_sid(actor.sid, record.call_id)
    ref = f"sa-{child[-12:]}"
    tools = spec.tools or [
        t for t in state.tools if depth < actor.settings.subagent_max_depth or t != "task"
    ]
    options: dict[str, Any] = {
        "model": spec.model or state.model,
        "system_prompt": spec.system_prompt,
        "prompt_mode": spec.prompt_mode,
        "tools": tools,
        "group_id": state.options.group_id,
        "user_data": state.options.user_data if spec.user_data is None else spec.user_data,
        "provider_opts": state.provider_opts if spec.provider_opts is None else spec.provider_opts,
        "subagents": [s.model_dump() for s in state.options.subagents],
        "max_turns": spec.max_turns or state.options.max_turns,
    }
    body = {
        "op": "create",
        "id": f"{child}.create",
        **{k: v for k, v in options.items() if v is not None},
        "parent": {"sid": actor.sid, "ref": ref, "depth": depth, "task": effect.description},
    }
    state.outbox.append(OutboxCommand(sid=child, op="create", body=body, msg_id=f"{child}.create"))
    state.pending_questions.append(
        PendingQuestion(
            ref=ref,
            call_id=record.call_id,
            kind="subagent",
            question=effect.description,
            child_sid=child,
        )
    )
    record.status = "awaiting"
    await actor.save()
    await actor.flush_outbox()
    _metrics.SUBAGENTS.inc()
    await actor.emit(
        "subagent_start",
        {"child_sid": child, "description": effect.description},
        request_id=request_id,
    )
    return None


def report_to_parent(
    actor: SessionActor, *, ok: bool, text: str, error: dict[str, str] | None
) -> None:
    """Queue the child's result for its parent (saved and published with the turn's end)."""
    state = actor.state
    assert state is not None
    parent = state.parent
    if parent is None or parent.reported:
        return
    parent.reported = True
    result = text if ok else (f"sub-agent failed: {error['message']}" if error else text)
    state.outbox.append(
        OutboxCommand(
            sid=parent.sid,
            op="respond",
            body={
                "op": "respond",
                "id": f"{actor.sid}.report",
                "ref": parent.ref,
                "response": {"status": "ok" if ok else "error", "result": result},
            },
            msg_id=f"{actor.sid}.report",
        )
    )


def abort_children(actor: SessionActor, *, reason: str) -> None:
    """An aborted parent aborts the sub-agents it was waiting for."""
    state = actor.state
    assert state is not None
    for question in state.pending_questions:
        if question.kind == "subagent" and question.child_sid:
            state.outbox.append(
                OutboxCommand(
                    sid=question.child_sid,
                    op="abort",
                    body={"op": "abort", "id": f"{question.child_sid}.abort", "reason": reason},
                    msg_id=f"{question.child_sid}.abort",
                )
            )
