"""Session routes of PROTOCOL §8: each one a command on NATS or a read of Redis.

A command route checks that the session exists for the caller's tenant (another tenant's
session is a 404, like a missing one), publishes the command and answers once JetStream
stored it; its effects arrive as events (SSE, WebSocket, webhooks).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import nats.errors
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from flotilla import CommandError, ReplyTimeout, UnavailableError
from flotilla.outbound import OutboundRefused, check_url
from gateway import _metrics
from gateway._auth import Principal
from gateway._dependencies import Caller
from gateway._directory import DirectoryEntry
from gateway._errors import ApiError, describe, documented, not_found
from gateway._resources import Gateway, gateway_of
from gateway._views import gateway_state, iso_ms
from schemas import (
    AbortRequest,
    Accepted,
    ApproveRequest,
    CheckpointList,
    CheckpointRequest,
    CreateSessionRequest,
    MessageList,
    ModelRequest,
    Ok,
    PromptAccepted,
    PromptRequest,
    RejectRequest,
    RespondRequest,
    SessionCreated,
    SessionDetail,
    SessionList,
    SessionOptions,
    SessionStats,
    SessionStopped,
    SessionSummary,
    SteerRequest,
    ToolRegistered,
    ToolRequest,
    is_token,
    new_command_id,
    new_session_id,
)

__all__ = [
    "do_abort",
    "do_approve",
    "do_prompt",
    "do_reject",
    "do_respond",
    "do_steer",
    "router",
    "session_state",
]

router = APIRouter(
    prefix="/v1/sessions", tags=["sessions"], responses=documented(401, 404, 422, 429, 503)
)
_BODY = documented(400, 413)
"""What a route that reads a body may answer besides the router's errors."""

_CONFLICTS = frozenset({"already_exists", "forbidden"})
"""A create refused because the id is taken (by this tenant or another: the answer is the
same, so it tells nothing about other tenants)."""
_STOP_WAIT_S = 10.0
_STARTS_AT_ONCE = frozenset({"idle", "hibernated"})
"""States in which a prompt starts a turn rather than waiting in the queue (a hibernated
session is idle: it resumes and runs the prompt)."""


async def _send(gateway: Gateway, tenant: str, sid: str, op: str, body: dict[str, Any]) -> str:
    """Publish one command; 503 when the stream does not confirm it, 413 when NATS refuses
    its size. Returns the command id (the `requestId`)."""
    body.setdefault("id", new_command_id())
    try:
        command_id = await gateway.fleet(tenant).send(sid, op, body)
    except CommandError as exc:
        if exc.code == "too_large":
            raise ApiError(413, str(exc)) from None
        raise ApiError(422, str(exc), code=exc.code) from None
    except (UnavailableError, nats.errors.Error) as exc:
        raise ApiError(503, f"the fleet did not accept the command: {exc}") from None
    _metrics.COMMANDS.labels(op).inc()
    return command_id


async def session_state(gateway: Gateway, caller: Principal, sid: str) -> dict[str, Any]:
    """The session's persisted state; 404 when it does not exist for the caller's tenant."""
    if not is_token(sid):
        raise not_found(sid)
    state = await gateway.reader.state(sid, caller.tenant)
    if state is None:
        raise not_found(sid)
    return state


# -- the directory -------------------------------------------------------------------------
@router.post("", status_code=201, response_model=SessionCreated, responses=_BODY | documented(409))
async def create_session(request: Request, caller: Caller, body: CreateSessionRequest) -> Any:
    """Create a session and answer once a worker confirmed it (201), or with its refusal."""
    gateway = gateway_of(request)
    options = body.to_options()
    sid = body.session_id or new_session_id()
    if not is_token(sid):
        raise ApiError(422, "sessionId must be 1..64 characters of A-Z a-z 0-9 _ -")
    fleet = gateway.fleet(caller.tenant)
    try:
        session = await fleet.create_agent(
            session_id=sid, timeout=gateway.config.create_timeout_s, **options
        )
    except ValidationError as exc:  # checked by the SDK before anything is published
        raise ApiError(422, describe(list(exc.errors()))) from None
    except CommandError as exc:  # the worker's refusal (a webhook URL refused included)
        if exc.code in _CONFLICTS:
            raise ApiError(409, f"session id {sid!r} is taken") from None
        if exc.code == "too_large":
            raise ApiError(413, str(exc)) from None
        raise ApiError(422, str(exc), code=exc.code) from None
    except ReplyTimeout:
        raise ApiError(503, "no worker confirmed the session in time") from None
    except (UnavailableError, nats.errors.Error) as exc:
        raise ApiError(503, f"the fleet did not accept the command: {exc}") from None
    await session.close()
    _metrics.COMMANDS.labels("create").inc()
    await gateway.directory.create(
        DirectoryEntry(
            sid=sid,
            tenant=caller.tenant,
            model=body.model,
            created_ms=int(time.time() * 1000),
            group=body.group_id,
            key_id=caller.key_id,
        )
    )
    return SessionCreated(session_id=sid, model=body.model, state="idle")


@router.get("", response_model=SessionList)
async def list_sessions(
    request: Request,
    caller: Caller,
    parent_id: Annotated[str | None, Query(alias="parentId", max_length=64)] = None,
) -> Any:
    """The caller's tenant's sessions, oldest first; sub-agents are listed under their parent
    (`?parentId=`), not among them."""
    gateway = gateway_of(request)
    if parent_id is None:
        entries = await gateway.directory.list_by_tenant(caller.tenant)
    else:
        await session_state(gateway, caller, parent_id)  # another tenant's parent is a 404
        entries = await gateway.directory.list_children(caller.tenant, parent_id)
    states = await asyncio.gather(*(gateway.reader.state(e.sid, caller.tenant) for e in entries))
    return SessionList(
        sessions=[
            SessionSummary(
                session_id=entry.sid,
                state=gateway_state(state),
                model=state.get("model", entry.model),
                created_at=iso_ms(entry.created_ms),
                group_id=entry.group,
                parent_id=entry.parent,
            )
            for entry, state in zip(entries, states, strict=True)
            if state is not None
        ]
    )


@router.get("/{sid}", response_model=SessionDetail)
async def get_session(request: Request, caller: Caller, sid: str) -> Any:
    return gateway_of(request).reader.detail(await session_state(gateway_of(request), caller, sid))


@router.delete("/{sid}", response_model=SessionStopped)
async def delete_session(request: Request, caller: Caller, sid: str) -> Any:
    """Stop the session and answer once the fleet confirmed it."""
    await session_state(gateway_of(request), caller, sid)
    gateway = gateway_of(request)
    session = await gateway.fleet(caller.tenant).session(sid)
    try:
        command_id = await _send(gateway, caller.tenant, sid, "stop", {})
        try:
            await session.wait_for({"session_stopped"}, request_id=command_id, timeout=_STOP_WAIT_S)
        except CommandError as exc:
            if exc.code != "session_not_found":  # stopped meanwhile: the same outcome
                raise ApiError(422, str(exc), code=exc.code) from None
        except ReplyTimeout:
            raise ApiError(503, "no worker confirmed the stop in time") from None
    finally:
        await session.close()
    await gateway.directory.delete(caller.tenant, sid)
    return SessionStopped(session_id=sid)


# -- commands (HTTP routes, and the WebSocket's actions) ------------------------------------
async def do_prompt(
    gateway: Gateway, caller: Principal, sid: str, body: PromptRequest
) -> PromptAccepted:
    """Queue a prompt. The event stream's position now is recorded first, so an SSE client
    that connects after this answer, without a cursor, sees the whole turn."""
    state = await session_state(gateway, caller, sid)
    await gateway.directory.set_watermark(caller.tenant, sid, await gateway.position())
    request_id = await _send(gateway, caller.tenant, sid, "prompt", {"text": body.text})
    await gateway.meter.count(caller.key_id, prompts=1)
    return PromptAccepted(
        request_id=request_id, session_id=sid, queued=gateway_state(state) not in _STARTS_AT_ONCE
    )


async def do_approve(gateway: Gateway, caller: Principal, sid: str, body: ApproveRequest) -> str:
    await _pending_approval(gateway, caller, sid, body.approval_id)
    command: dict[str, Any] = {"approval_id": body.approval_id}
    if body.kind is not None:
        command["kind"] = body.kind
    return await _send(gateway, caller.tenant, sid, "approve", command)


async def do_reject(gateway: Gateway, caller: Principal, sid: str, body: RejectRequest) -> str:
    await _pending_approval(gateway, caller, sid, body.approval_id)
    command: dict[str, Any] = {"approval_id": body.approval_id, "auto_resume": body.auto_resume}
    if body.reason is not None:
        command["reason"] = body.reason
    return await _send(gateway, caller.tenant, sid, "reject", command)


async def do_respond(gateway: Gateway, caller: Principal, sid: str, body: RespondRequest) -> str:
    state = await session_state(gateway, caller, sid)
    question = next(
        (q for q in state.get("pending_questions") or [] if q.get("ref") == body.ref), None
    )
    if question is None:
        raise ApiError(404, f"no pending question {body.ref!r}")
    if question.get("kind") == "subagent":  # only the sub-agent's own report ends this wait
        raise ApiError(403, f"{body.ref!r} waits for a sub-agent: only its own report ends it")
    command = {"ref": body.ref, "response": body.response}
    return await _send(gateway, caller.tenant, sid, "respond", command)


async def do_steer(gateway: Gateway, caller: Principal, sid: str, body: SteerRequest) -> str:
    await session_state(gateway, caller, sid)
    return await _send(gateway, caller.tenant, sid, "steer", {"text": body.text})


async def do_abort(gateway: Gateway, caller: Principal, sid: str, body: AbortRequest) -> str:
    await session_state(gateway, caller, sid)
    command: dict[str, Any] = {}
    if body.reason is not None:
        command["reason"] = body.reason
    if body.kill_tools is not None:
        command["kill_tools"] = "all" if body.kill_tools else "none"
    if body.clear_queue is not None:
        command["clear_queue"] = body.clear_queue
    return await _send(gateway, caller.tenant, sid, "abort", command)


@router.post("/{sid}/prompt", status_code=202, response_model=PromptAccepted, responses=_BODY)
async def prompt(request: Request, caller: Caller, sid: str, body: PromptRequest) -> Any:
    return await do_prompt(gateway_of(request), caller, sid, body)


@router.post("/{sid}/approve", response_model=Ok, responses=_BODY)
async def approve(request: Request, caller: Caller, sid: str, body: ApproveRequest) -> Any:
    await do_approve(gateway_of(request), caller, sid, body)
    return Ok()


@router.post("/{sid}/reject", response_model=Ok, responses=_BODY)
async def reject(request: Request, caller: Caller, sid: str, body: RejectRequest) -> Any:
    await do_reject(gateway_of(request), caller, sid, body)
    return Ok()


@router.post("/{sid}/respond", response_model=Ok, responses=_BODY | documented(403))
async def respond(request: Request, caller: Caller, sid: str, body: RespondRequest) -> Any:
    await do_respond(gateway_of(request), caller, sid, body)
    return Ok()


@router.post("/{sid}/steer", status_code=202, response_model=Accepted, responses=_BODY)
async def steer(request: Request, caller: Caller, sid: str, body: SteerRequest) -> Any:
    return Accepted(request_id=await do_steer(gateway_of(request), caller, sid, body))


@router.post("/{sid}/abort", status_code=202, response_model=Accepted, responses=_BODY)
async def abort(request: Request, caller: Caller, sid: str, body: AbortRequest) -> Any:
    return Accepted(request_id=await do_abort(gateway_of(request), caller, sid, body))


@router.post("/{sid}/model", status_code=202, response_model=Accepted, responses=_BODY)
async def switch_model(request: Request, caller: Caller, sid: str, body: ModelRequest) -> Any:
    await session_state(gateway_of(request), caller, sid)
    command: dict[str, Any] = {"model": body.model}
    if body.provider_opts is not None:
        command["provider_opts"] = body.provider_opts
    try:
        SessionOptions.model_validate({"model": body.model})
    except ValidationError as exc:
        raise ApiError(422, describe(list(exc.errors()))) from None
    request_id = await _send(gateway_of(request), caller.tenant, sid, "switch_model", command)
    return Accepted(request_id=request_id)


@router.post("/{sid}/tools", status_code=201, response_model=ToolRegistered, responses=_BODY)
async def register_tool(request: Request, caller: Caller, sid: str, body: ToolRequest) -> Any:
    """Attach a callback tool: the fleet POSTs each call, signed, to `callbackUrl`."""
    await session_state(gateway_of(request), caller, sid)
    gateway = gateway_of(request)
    await _check_outbound(gateway, body.callback_url)
    tool: dict[str, Any] = {
        "name": body.name,
        "description": body.description,
        "parameters": body.parameters,
        "callback_url": body.callback_url,
    }
    if body.timeout_ms is not None:
        tool["timeout_ms"] = body.timeout_ms
    await _send(gateway, caller.tenant, sid, "attach_tool", {"tool": tool})
    return ToolRegistered(name=body.name)


@router.post("/{sid}/checkpoints", status_code=202, response_model=Accepted, responses=_BODY)
async def checkpoint(
    request: Request, caller: Caller, sid: str, body: CheckpointRequest | None = None
) -> Any:
    await session_state(gateway_of(request), caller, sid)
    command: dict[str, Any] = {}
    if body is not None and body.label is not None:
        command["label"] = body.label
    request_id = await _send(gateway_of(request), caller.tenant, sid, "checkpoint", command)
    return Accepted(request_id=request_id)


# -- reads ---------------------------------------------------------------------------------
@router.get("/{sid}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(request: Request, caller: Caller, sid: str) -> Any:
    await session_state(gateway_of(request), caller, sid)
    return CheckpointList(
        checkpoints=await gateway_of(request).reader.checkpoints(caller.tenant, sid)
    )


@router.get("/{sid}/stats", response_model=SessionStats)
async def stats(request: Request, caller: Caller, sid: str) -> Any:
    return gateway_of(request).reader.stats(await session_state(gateway_of(request), caller, sid))


@router.get("/{sid}/messages", response_model=MessageList)
async def messages(request: Request, caller: Caller, sid: str) -> Any:
    await session_state(gateway_of(request), caller, sid)
    return MessageList(messages=await gateway_of(request).reader.messages(caller.tenant, sid))


# -- helpers -------------------------------------------------------------------------------
async def _pending_approval(
    gateway: Gateway, caller: Principal, sid: str, approval_id: str
) -> None:
    state = await session_state(gateway, caller, sid)
    pending = state.get("pending_approvals") or []
    if not any(a.get("approval_id") == approval_id and a.get("decision") is None for a in pending):
        raise ApiError(404, f"no pending approval {approval_id!r}")


async def _check_outbound(gateway: Gateway, url: str) -> None:
    try:
        await check_url(url, gateway.settings.callback_allow)
    except OutboundRefused as exc:
        raise ApiError(422, str(exc), code=exc.code) from None
    except ValueError as exc:
        raise ApiError(422, str(exc), code="invalid_url") from None
