"""The commands of PROTOCOL §3 applied to a resident session, one function per op.

Each function validates first (raising CommandRejected before touching the state), then
changes the state, commits it with the command's stream sequence (one fenced write, then
the ack), then publishes the events it caused. Turns run in their own task; the commands
that start or resume one hand it to the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

import orjson

from schemas import (
    APPROVAL_TIMEOUT,
    Abort,
    Approve,
    AttachTool,
    Checkpoint,
    Command,
    Create,
    DetachTool,
    Hibernate,
    PendingApproval,
    PendingQuestion,
    Prompt,
    QueuedPrompt,
    Reject,
    Respond,
    SessionState,
    Steer,
    SteeringItem,
    Stop,
    SubagentResult,
    SwitchModel,
    ToolCallRecord,
    UpdatePluginOpts,
    canonical_tool_name,
    new_command_id,
)
from workers import _audit, _checkpoints, _metrics, _subagents, _turn_end
from workers._batch import announce_end
from workers._delivery import Delivery
from workers._events import now_ms
from workers._plugin_opts import change_plugin_opts
from workers._sessions import create_session
from workers._turn import TurnRunner
from workers.errors import CommandRejected
from workers.plugins import Abort as AbortAction
from workers.plugins import Hook, Intervene, Skip

if TYPE_CHECKING:
    from workers._actor import SessionActor


async def apply(actor: SessionActor, command: Command, delivery: Delivery) -> None:
    rid = command.id or f"seq-{delivery.seq}"
    if isinstance(command, Create):
        await create_session(actor, command, delivery, rid)
    elif isinstance(command, Prompt):
        await prompt(actor, command, delivery, rid)
    elif isinstance(command, Steer):
        await steer(actor, command, delivery, rid)
    elif isinstance(command, Abort):
        await abort(actor, command, delivery, rid)
    elif isinstance(command, Approve):
        await approve(actor, command, delivery, rid)
    elif isinstance(command, Reject):
        await reject(actor, command, delivery, rid)
    elif isinstance(command, Respond):
        await respond(actor, command, delivery, rid)
    elif isinstance(command, SubagentResult):
        await subagent_result(actor, command, delivery, rid)
    elif isinstance(command, SwitchModel):
        await switch_model(actor, command, delivery, rid)
    elif isinstance(command, AttachTool):
        await attach_tool(actor, command, delivery, rid)
    elif isinstance(command, DetachTool):
        await detach_tool(actor, command, delivery, rid)
    elif isinstance(command, UpdatePluginOpts):
        await update_plugin_opts(actor, command, delivery, rid)
    elif isinstance(command, Checkpoint):
        await _checkpoints.checkpoint(actor, command, delivery, rid)
    elif isinstance(command, Hibernate):
        await hibernate(actor, delivery, rid)
    elif isinstance(command, Stop):
        await stop(actor, delivery, rid)
    else:
        assert_never(command)


def _state(actor: SessionActor) -> SessionState:
    state = actor.state
    assert state is not None
    return state


# -- prompts -----------------------------------------------------------------------------------
async def prompt(actor: SessionActor, command: Prompt, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    text = command.text
    gate = await actor.hooks.run(Hook.BEFORE_PROMPT, {"text": text}, request_id=rid)
    if isinstance(gate.terminal, AbortAction | Skip):
        reason = (
            f"plugin: {gate.terminal.reason}"
            if isinstance(gate.terminal, AbortAction)
            else "skipped_by_plugin"
        )
        await actor.commit(delivery, "rejected")
        await actor.emit("prompt_rejected", {"text": text, "reason": reason}, request_id=rid)
        return
    if isinstance(gate.terminal, Intervene):
        text = gate.terminal.prompt
    state.prompt_count += 1
    meta = command.meta or None
    current = state.current
    # a runner without a current turn is announcing the end of one: it takes queued prompts
    # before it exits, so a prompt arriving now is queued rather than starting a second runner
    if current is not None or actor.turn is not None:
        if (
            current is not None
            and current.suspended
            and not state.pending_approvals
            and not state.pending_questions
        ):
            # decisions were taken with auto_resume=false: this prompt carries the turn on
            current.follow_ups.append(text)
            await actor.commit(delivery)
            await actor.emit("prompt_received", {"text": text, "queued": False}, request_id=rid)
            actor.start_turn()
            return
        if command.strategy == "reject":
            await actor.commit(delivery, "rejected")
            await actor.emit("prompt_rejected", {"text": text, "reason": "busy"}, request_id=rid)
            return
        if command.strategy == "enqueue" or current is None:
            state.prompt_queue.append(QueuedPrompt(text=text, request_id=rid, meta=command.meta))
            await actor.commit(delivery, "queued")
            await actor.emit(
                "prompt_queued", {"text": text, "queued": True}, request_id=rid, meta=meta
            )
            return
        # interrupt keeps what the running turn produced; rollback removes it
        await actor.stop_turn(detach=_detached(actor, "default"))
        await _turn_end.end_aborted(
            actor,
            "interrupted" if command.strategy == "interrupt" else "rolled_back",
            rollback=command.strategy == "rollback",
        )
    TurnRunner.begin(actor, text, rid, command.meta)
    await actor.commit(delivery)
    await actor.emit("prompt_received", {"text": text, "queued": False}, request_id=rid, meta=meta)
    await actor.emit("agent_start", {}, request_id=rid)
    await _audit.turn_started(actor, rid)
    actor.start_turn()


async def steer(actor: SessionActor, command: Steer, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    ref = command.ref or f"st-{new_command_id()}"
    text = command.text
    gate = await actor.hooks.run(Hook.BEFORE_STEERING, {"text": text}, request_id=rid)
    if isinstance(gate.terminal, AbortAction):
        await actor.commit(delivery, "rejected")
        await actor.emit(
            "steering_received", {"ref": ref, "status": "rejected_by_plugin"}, request_id=rid
        )
        return
    if isinstance(gate.terminal, Intervene):
        text = gate.terminal.prompt
    if state.current is None and actor.turn is None:  # idle: a steer is a prompt
        TurnRunner.begin(actor, text, rid, command.meta)
        await actor.commit(delivery)
        await actor.emit("steering_applied", {"refs": [ref], "count": 1}, request_id=rid)
        await actor.emit("agent_start", {}, request_id=rid)
        await _audit.turn_started(actor, rid)
        actor.start_turn()
        return
    if len(state.steering_queue) >= state.options.max_steering_queue:
        await actor.commit(delivery, "queue_full")
        await actor.emit(
            "steering_received", {"ref": ref, "status": "rejected_full"}, request_id=rid
        )
        await actor.emit(
            "error",
            {
                "code": "queue_full",
                "message": f"the steering queue holds {state.options.max_steering_queue}",
                "command_id": command.id,
            },
            request_id=rid,
        )
        return
    if state.current is None:  # the turn is ending: the text becomes the next prompt
        state.prompt_queue.append(QueuedPrompt(text=text, request_id=rid, meta=command.meta))
    else:
        state.steering_queue.append(SteeringItem(ref=ref, text=text, request_id=rid))
    await actor.commit(delivery, "queued")
    await actor.emit("steering_received", {"ref": ref, "status": "queued"}, request_id=rid)
    if actor.turn is not None:
        actor.turn.steered.set()


# -- abort -------------------------------------------------------------------------------------
def _detached(actor: SessionActor, kill_tools: str) -> set[str]:
    """The running calls an abort leaves to finish on their own."""
    if actor.turn is None or kill_tools == "all":
        return set()
    running = actor.turn.running_calls()
    if kill_tools == "none":
        return {r.call_id for r in running}
    state = _state(actor)
    immune = set(state.options.interrupt_immune_tools)
    return {r.call_id for r in running if r.name in immune}


async def abort(actor: SessionActor, command: Abort, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    if state.current is None:
        await actor.commit(delivery, "idle")
        await actor.emit(
            "error",
            {"code": "not_running", "message": "no turn to abort", "command_id": command.id},
            request_id=rid,
        )
        return
    running = actor.turn.running_calls() if actor.turn is not None else []
    detach = _detached(actor, command.kill_tools)
    killed = [r for r in running if r.call_id not in detach]
    await actor.stop_turn(detach=detach)
    dropped = state.prompt_queue if command.clear_queue else []
    if command.clear_queue:
        state.prompt_queue = []
    state.applied_seq = delivery.seq
    await _turn_end.end_aborted(actor, command.reason)  # saves, then publishes agent_abort
    await delivery.ack("abort")
    for record in killed:
        await actor.emit(
            "tool_killed",
            {"name": record.name, "call_id": record.call_id, "reason": command.reason},
            request_id=rid,
        )
    for queued in dropped:
        await actor.emit(
            "prompt_dropped", {"text": queued.text, "queued": True}, request_id=queued.request_id
        )


# -- approvals and answers ---------------------------------------------------------------------
def _approval(actor: SessionActor, approval_id: str) -> PendingApproval:
    state = _state(actor)
    approval = next((a for a in state.pending_approvals if a.approval_id == approval_id), None)
    if approval is None:
        raise CommandRejected("not_found", f"no pending approval {approval_id!r}")
    return approval


def _check_offered(approval: PendingApproval, answer: str) -> None:
    """The human may only give the answers the approval offered (CMDC's
    `permission_options`)."""
    if approval.options is not None and answer not in approval.options:
        raise CommandRejected(
            "permission_not_offered",
            f"{answer!r} is not offered for this approval; offered: {', '.join(approval.options)}",
        )


EXPIRY_TOLERANCE_MS = 2_000
"""Clocks of the fleet's hosts may differ this much: an expiry sent on another host's clock."""


def _check_expired(approval: PendingApproval) -> None:
    """Only the fleet expires an approval, at its deadline: a client's `reject` that claims
    a timeout before it is `forbidden`."""
    if approval.expires_ms is None or approval.expires_ms > now_ms() + EXPIRY_TOLERANCE_MS:
        raise CommandRejected(
            "forbidden", "an approval times out at its deadline, by the fleet only"
        )


def _record(actor: SessionActor, call_id: str) -> ToolCallRecord:
    state = _state(actor)
    assert state.current is not None
    return next(r for r in state.current.batch if r.call_id == call_id)


def _nothing_pending(actor: SessionActor) -> bool:
    state = _state(actor)
    return not state.pending_approvals and not state.pending_questions


async def approve(actor: SessionActor, command: Approve, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    approval = _approval(actor, command.approval_id)
    _check_offered(approval, "approve_always" if command.kind == "always" else "approve_once")
    record = _record(actor, approval.call_id)
    record.status = "pending"
    record.approved = True
    state.pending_approvals.remove(approval)
    if command.kind == "always":
        for family in approval.families or [approval.family]:
            if (approval.tool, family) not in state.allowlist:
                state.allowlist.append((approval.tool, family))
    resume = command.auto_resume and _nothing_pending(actor)
    await actor.commit(delivery)
    actor.arm_timers()
    _metrics.APPROVALS.labels(f"approved_{command.kind}").inc()
    await actor.emit(
        "approval_resolved",
        {
            "approval_id": approval.approval_id,
            "tool": approval.tool,
            "status": "approved",
            "kind": command.kind,
        },
        request_id=rid,
    )
    await _audit.approval_resolved(
        actor, approval, status="approved", kind=command.kind, timed_out=False, request_id=rid
    )
    if resume:
        await actor.emit(
            "agent_resumed",
            {"trigger": "tool_approved", "approval_id": approval.approval_id},
            request_id=rid,
        )
        actor.resume_turn()


async def reject(actor: SessionActor, command: Reject, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    timed_out = command.reason == APPROVAL_TIMEOUT
    if timed_out and not any(a.approval_id == command.approval_id for a in state.pending_approvals):
        await actor.commit(delivery, "moot")  # resolved before its deadline: nothing to do
        return
    approval = _approval(actor, command.approval_id)
    if timed_out:
        _check_expired(approval)
    else:
        _check_offered(approval, "reject_once")
    record = _record(actor, approval.call_id)
    record.status = "done"
    record.is_error = True
    record.result = (
        "not approved in time: the call was not executed"
        if timed_out
        else f"rejected by the user: {command.reason}. The call was not executed."
    )
    state.pending_approvals.remove(approval)
    resolved = [approval]
    if not command.auto_resume:  # the turn ends: every other pending call is refused too
        for other in list(state.pending_approvals):
            other_record = _record(actor, other.call_id)
            other_record.status, other_record.is_error = "done", True
            other_record.result = "not executed: the turn ended with a rejection"
            state.pending_approvals.remove(other)
            resolved.append(other)
    await actor.commit(delivery)
    actor.arm_timers()
    _metrics.APPROVALS.labels("timed_out" if timed_out else "rejected").inc()
    for item in resolved:
        await actor.emit(
            "approval_resolved",
            {
                "approval_id": item.approval_id,
                "tool": item.tool,
                "status": "rejected",
                "kind": "timeout" if timed_out else None,
            },
            request_id=rid,
        )
        await _audit.approval_resolved(
            actor,
            item,
            status="rejected",
            kind="timeout" if timed_out else None,
            timed_out=timed_out,
            request_id=rid,
        )
    if not _nothing_pending(actor):
        return
    if command.auto_resume:
        await actor.emit(
            "agent_resumed",
            {
                "trigger": "tool_approval_timeout" if timed_out else "tool_rejected",
                "approval_id": approval.approval_id,
            },
            request_id=rid,
        )
        actor.resume_turn()
    else:
        actor.resume_turn(end_reason="rejected")


async def respond(actor: SessionActor, command: Respond, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    question = next((q for q in state.pending_questions if q.ref == command.ref), None)
    if question is None:
        raise CommandRejected("not_found", f"no pending question {command.ref!r}")
    if question.kind == "subagent":
        raise CommandRejected(
            "forbidden", f"{command.ref!r} waits for a sub-agent: only its own report ends it"
        )
    response = command.response
    result = response if isinstance(response, str) else _json(response)
    record, resume = await _end_wait(actor, question, delivery, result=result, is_error=False)
    await actor.emit("user_responded", {"ref": command.ref, "response": response}, request_id=rid)
    await _carry_on(actor, record, rid, resume=resume)


async def subagent_result(
    actor: SessionActor, command: SubagentResult, delivery: Delivery, rid: str
) -> None:
    """A sub-agent's signed report ends its parent's wait (PROTOCOL §6.11)."""
    state = _state(actor)
    question = _subagents.take_result(actor, command)
    if question is None:  # the parent stopped waiting meanwhile (aborted): nothing to do
        await actor.commit(delivery, "moot")
        return
    state.subagent_usage = _subagents.sum_usage(state.subagent_usage, command.usage)
    record, resume = await _end_wait(
        actor, question, delivery, result=command.result, is_error=command.status != "ok"
    )
    _metrics.SUBAGENTS_ENDED.labels("error" if record.is_error else "ok").inc()
    await actor.emit(
        "subagent_end",
        {"child_sid": command.child_sid, "result": record.result},
        request_id=state.current.request_id if state.current else rid,
    )
    await _carry_on(actor, record, rid, resume=resume)


async def _end_wait(
    actor: SessionActor,
    question: PendingQuestion,
    delivery: Delivery,
    *,
    result: str,
    is_error: bool,
) -> tuple[ToolCallRecord, bool]:
    """The waiting call gets its result and the wait is dropped, committed with the command;
    (the call, whether nothing else is pending, so the turn goes on)."""
    state = _state(actor)
    record = _record(actor, question.call_id)
    record.status, record.result, record.is_error = "done", result, is_error
    state.pending_questions.remove(question)
    resume = _nothing_pending(actor)
    await actor.commit(delivery)
    return record, resume


async def _carry_on(actor: SessionActor, record: ToolCallRecord, rid: str, *, resume: bool) -> None:
    await announce_end(actor, record, rid)
    if resume:
        actor.resume_turn()


# -- session configuration ---------------------------------------------------------------------
async def switch_model(
    actor: SessionActor, command: SwitchModel, delivery: Delivery, rid: str
) -> None:
    """Idle or busy alike: the next LLM request uses the new model (PROTOCOL §3)."""
    before = _audit.model_of(_state(actor))
    await actor.ctx.check_model(command.model)
    switched = actor.switch_model(command.model, command.provider_opts)
    await actor.commit(delivery, "unchanged" if switched is None else "applied")
    if switched is not None:
        await actor.emit("model_switched", switched, request_id=rid)
        await _audit.model_switched(actor, before, by="user", request_id=rid)


async def attach_tool(
    actor: SessionActor, command: AttachTool, delivery: Delivery, rid: str
) -> None:
    state = _state(actor)
    resolver = actor.ctx.tools
    if isinstance(command.tool, str):
        name = canonical_tool_name(command.tool)
        if name in state.tools:
            raise CommandRejected("already_attached", f"tool {name!r} is already attached")
        if not resolver.known(name, tenant=state.tenant):
            raise CommandRejected("invalid_tool", f"no tool {name!r} on this fleet")
        state.tools.append(name)
    else:
        try:
            spec = await resolver.callback_spec(command.tool)
        except ValueError as exc:
            raise CommandRejected("invalid_tool", str(exc)) from None
        name = spec["name"]
        if name in state.tools or any(c["name"] == name for c in state.callback_tools):
            raise CommandRejected("already_attached", f"tool {name!r} is already attached")
        state.callback_tools.append(spec)
    await actor.commit(delivery)
    await actor.emit("tool_attached", {"name": name}, request_id=rid)


async def detach_tool(
    actor: SessionActor, command: DetachTool, delivery: Delivery, rid: str
) -> None:
    state = _state(actor)
    name = canonical_tool_name(command.tool)
    if name in state.tools:
        state.tools.remove(name)
    elif any(c["name"] == name for c in state.callback_tools):
        state.callback_tools = [c for c in state.callback_tools if c["name"] != name]
    else:
        raise CommandRejected("not_found", f"tool {name!r} is not attached")
    await actor.commit(delivery)
    await actor.emit("tool_detached", {"name": name}, request_id=rid)


async def update_plugin_opts(
    actor: SessionActor, command: UpdatePluginOpts, delivery: Delivery, rid: str
) -> None:
    """Idle (waiting for an approval or an answer included): applied now. Running: applied
    when the turn ends, the last update of a plugin winning (CMDC's postponed flush)."""
    state = _state(actor)
    if not actor.hooks.chain.has(command.plugin):
        raise CommandRejected("not_found", f"no plugin {command.plugin!r} in this session")
    running = actor.turn is not None or (state.current is not None and not state.current.suspended)
    if running:  # a turn that waits for an approval or an answer is idle: applied now
        state.deferred_plugin_opts = [
            d for d in state.deferred_plugin_opts if d["plugin"] != command.plugin
        ] + [{"plugin": command.plugin, "opts": command.opts, "request_id": rid}]
        await actor.commit(delivery, "deferred")
        return
    updated = await change_plugin_opts(actor, command.plugin, command.opts, rid)
    await actor.commit(delivery, "applied" if updated["success"] else "refused")
    await actor.emit("plugin_opts_updated", updated, request_id=rid)


# -- lifecycle ---------------------------------------------------------------------------------
async def hibernate(actor: SessionActor, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    if actor.turn is not None:
        if not (state.pending_approvals or state.pending_questions):
            raise CommandRejected("busy", "a turn is running; hibernate when idle")
        # the turn is on its way to waiting for the user: hibernate once its runner stops
        actor.hibernation = rid
        await actor.commit(delivery, "deferred")
        return
    await actor.hibernate(rid, delivery)


async def stop(actor: SessionActor, delivery: Delivery, rid: str) -> None:
    state = _state(actor)
    if state.current is not None:
        await actor.stop_turn()
        await _turn_end.end_aborted(actor, "stopped", stopping=True)
    await actor.hooks.run(Hook.SESSION_END, {}, request_id=rid)
    await actor.workspace.clear()
    await actor.ctx.store.delete(
        actor.sid, epoch=actor.epoch, version=actor.version, shard=actor.shard, tenant=state.tenant
    )
    actor.written = None  # deleted on purpose: a retry of this stop must not write it back
    await delivery.ack("stop")
    await actor.emit("session_stopped", {}, request_id=rid)
    actor.drop()


def _json(value: object) -> str:
    return orjson.dumps(value).decode()
