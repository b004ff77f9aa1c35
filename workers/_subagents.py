"""Sub-agents: the `task` tool runs a child as a fleet session of its own (PROTOCOL §6.11).

The parent saves a `create` for the child in its outbox (published after the save, so a lost
worker neither loses nor doubles it), marks the call as waiting and suspends its turn
without holding a slot. The child runs under the parent's plugins with their options in
force (approvals, guards, budgets) unless its spec names its own, and starts its task at
`create`. When its turn ends it reports to the parent the same way, then stops itself.

Only the fleet can start a child or end a parent's wait. The parent keeps a random secret
per child in its persisted wait; the child's worker reads it from the parent's state when it
checks the `create` (a `create` naming a parent that does not wait for this very session is
`forbidden`), and signs the report with it. A report whose signature does not match, and any
client `respond` to a sub-agent's ref, are `forbidden` and change nothing. A child's spend
counts against the parent's budget: the child starts with what the parent had spent, and its
report carries what it spent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any

import orjson

from schemas import (
    Create,
    OutboxCommand,
    ParentLink,
    PendingQuestion,
    SessionState,
    SubagentResult,
    SubAgentSpec,
    ToolCallRecord,
    Usage,
    canonical_tool_name,
)
from workers import _metrics
from workers.errors import CommandRejected
from workers.plugins import PluginLoadError, load_plugins
from workers.tools import SubagentEffect

if TYPE_CHECKING:
    from workers._actor import SessionActor

log = logging.getLogger(__name__)

GENERAL = "general-purpose"


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


def _plugins(actor: SessionActor, spec: SubAgentSpec) -> list[Any]:
    """The child's plugins: its spec's, else the parent's with the options in force now."""
    if spec.plugins is not None:
        return [p if isinstance(p, str) else p.model_dump() for p in spec.plugins]
    return [{"name": p.name, "opts": dict(p.opts)} for p in actor.hooks.chain.plugins]


def check_plugins(specs: list[Any], *, extra: tuple[str, ...]) -> str | None:
    """Why these plugin specs cannot be loaded, if they cannot (checked before a child is
    created, so that a parent learns it from its tool result rather than waiting)."""
    try:
        load_plugins(specs, extra=extra, import_paths=False)
    except PluginLoadError as exc:
        return str(exc)
    return None


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
    tools = [canonical_tool_name(t) for t in spec.tools] or [
        t for t in state.tools if depth < actor.settings.subagent_max_depth or t != "task"
    ]
    unknown = [t for t in tools if not actor.ctx.tools.known(t, tenant=state.tenant)]
    plugins = _plugins(actor, spec)
    problem = (
        f"no tool {unknown[0]!r} on this fleet"
        if unknown
        else check_plugins(plugins, extra=actor.settings.custom_plugins)
    )
    if problem is not None:
        return f"the sub-agent cannot start: {problem}"
    # random, so that nobody can take the child's id first; saved before it is published
    child = f"{actor.sid[:40]}-{secrets.token_hex(8)}"
    ref = f"sa-{child[-12:]}"
    options: dict[str, Any] = {
        "model": spec.model or state.model,
        "system_prompt": spec.system_prompt,
        "prompt_mode": spec.prompt_mode,
        "tools": tools,
        "plugins": plugins,
        "skills_dirs": state.options.skills_dirs if spec.skills_dirs is None else spec.skills_dirs,
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
    # message ids are fleet-wide (the stream's duplicate window): the tenant is part of them
    state.outbox.append(
        OutboxCommand(sid=child, op="create", body=body, msg_id=f"{state.tenant}.{child}.create")
    )
    state.pending_questions.append(
        PendingQuestion(
            ref=ref,
            call_id=record.call_id,
            kind="subagent",
            question=effect.description,
            child_sid=child,
            token=secrets.token_hex(16),
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


# -- the child's side --------------------------------------------------------------------------
async def verify_parent(
    actor: SessionActor, command: Create, tenant: str
) -> tuple[ParentLink, int]:
    """The link and depth of a sub-agent being created, from its parent's persisted wait;
    `forbidden` when the parent does not wait for this very session (a client's `create`
    with a `parent` it made up)."""
    assert command.parent is not None
    raw = await actor.ctx.store.peek(tenant, command.parent.sid)
    parent = SessionState.model_validate_json(raw) if raw else None
    question = (
        next(
            (
                q
                for q in parent.pending_questions
                if q.ref == command.parent.ref and q.kind == "subagent"
            ),
            None,
        )
        if parent is not None and parent.tenant == tenant
        else None
    )
    if parent is None or question is None or question.child_sid != actor.sid or not question.token:
        raise CommandRejected(
            "forbidden", "a sub-agent is created by its parent session only (no such wait)"
        )
    link = ParentLink(
        sid=parent.sid, ref=question.ref, token=question.token, spent_usd=parent.spent_usd
    )
    return link, parent.depth + 1


def _signature(token: str, *, child: str, ref: str, status: str, result: str, usage: Usage) -> str:
    message = orjson.dumps(
        [child, ref, status, result, usage.model_dump()], option=orjson.OPT_SORT_KEYS
    )
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def report_body(
    child: str, link: ParentLink, *, ok: bool, result: str, usage: Usage
) -> dict[str, Any]:
    """The signed `subagent_result` a child sends its parent."""
    status = "ok" if ok else "error"
    return {
        "op": "subagent_result",
        "id": f"{child}.report",
        "ref": link.ref,
        "child_sid": child,
        "status": status,
        "result": result,
        "usage": usage.model_dump(),
        "signature": _signature(
            link.token, child=child, ref=link.ref, status=status, result=result, usage=usage
        ),
    }


def report_to_parent(
    actor: SessionActor,
    *,
    ok: bool,
    text: str,
    error: dict[str, str] | None,
    stopping: bool = False,
) -> None:
    """Queue the child's result for its parent, then its own `stop` (both saved and
    published with the turn's end): the task is over, so is the sub-agent session."""
    state = actor.state
    assert state is not None
    parent = state.parent
    if parent is None or parent.reported:
        return
    parent.reported = True
    result = text if ok else (f"sub-agent failed: {error['message']}" if error else text)
    spent = sum_usage(state.usage, state.subagent_usage)
    state.outbox.append(
        OutboxCommand(
            sid=parent.sid,
            op="subagent_result",
            body=report_body(actor.sid, parent, ok=ok, result=result, usage=spent),
            msg_id=f"{state.tenant}.{actor.sid}.report",
        )
    )
    if not stopping:
        state.outbox.append(
            OutboxCommand(
                sid=actor.sid,
                op="stop",
                body={"op": "stop", "id": f"{actor.sid}.stop"},
                msg_id=f"{state.tenant}.{actor.sid}.stop",
            )
        )


async def report_refusal(
    actor: SessionActor, link: ParentLink, tenant: str, exc: CommandRejected
) -> None:
    """A verified child whose `create` was refused tells its parent (which would wait
    forever otherwise): the same signed report, published at once (no state to save)."""
    body = report_body(
        actor.sid, link, ok=False, result=f"sub-agent failed: {exc.message}", usage=Usage()
    )
    try:
        await actor.ctx.commands.publish(
            tenant=tenant,
            sid=link.sid,
            op="subagent_result",
            body=body,
            msg_id=f"{tenant}.{body['id']}",
        )
    except Exception as publish_error:  # the parent's wait stays; its abort still ends it
        log.warning("sub-agent %s: could not report its refusal: %r", actor.sid, publish_error)


# -- the parent's side -------------------------------------------------------------------------
def take_result(actor: SessionActor, command: SubagentResult) -> PendingQuestion | None:
    """The wait a genuine report ends (None: no such wait any more, e.g. the parent was
    aborted meanwhile); `forbidden` for a report the fleet did not sign."""
    state = actor.state
    assert state is not None
    question = next(
        (q for q in state.pending_questions if q.ref == command.ref and q.kind == "subagent"),
        None,
    )
    if question is None:
        return None
    expected = _signature(
        question.token or "",
        child=command.child_sid,
        ref=command.ref,
        status=command.status,
        result=command.result,
        usage=command.usage,
    )
    if (
        not question.token
        or question.child_sid != command.child_sid
        or not hmac.compare_digest(expected, command.signature)
    ):
        raise CommandRejected("forbidden", "only the sub-agent itself can end this wait")
    return question


def sum_usage(total: Usage, more: Usage) -> Usage:
    return Usage.model_validate(
        {k: getattr(total, k) + getattr(more, k) for k in Usage.model_fields}
    )


def abort_children(actor: SessionActor, *, reason: str) -> None:
    """An aborted parent aborts the sub-agents it was waiting for (each then stops)."""
    state = actor.state
    assert state is not None
    for question in state.pending_questions:
        if question.kind == "subagent" and question.child_sid:
            state.outbox.append(
                OutboxCommand(
                    sid=question.child_sid,
                    op="abort",
                    body={"op": "abort", "id": f"{question.child_sid}.abort", "reason": reason},
                    msg_id=f"{state.tenant}.{question.child_sid}.abort",
                )
            )
