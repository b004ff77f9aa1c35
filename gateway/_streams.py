"""Event streams of PROTOCOL §8: SSE for a session or a group, and the session WebSocket.

Both read FLOTILLA_EVT through an ordered JetStream consumer on the session's (or group's)
subjects, so a cursor (`Last-Event-ID`, `since`) resumes with no gap and no duplicate, and a
cursor older than the retention window gets `stream_gap` first. The SSE `id:` and the
WebSocket's `id` are the stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway import _metrics
from gateway._auth import Principal
from gateway._dependencies import Caller, admit, presented_key
from gateway._errors import (
    UNREACHABLE,
    ApiError,
    describe,
    documented,
    error_response,
    unavailable,
)
from gateway._external import to_external, ws_message
from gateway._resources import Gateway, gateway_of
from gateway._sessions import (
    do_abort,
    do_approve,
    do_prompt,
    do_reject,
    do_respond,
    do_steer,
    session_state,
)
from schemas import (
    AbortRequest,
    ApproveRequest,
    Event,
    PromptRequest,
    RejectRequest,
    RespondRequest,
    SteerRequest,
    is_token,
)

log = logging.getLogger(__name__)

__all__ = ["router"]

router = APIRouter(tags=["events"], responses=documented(401, 404, 422, 429, 503))

Since = Annotated[int | None, Query(ge=0, description="resume after this event sequence")]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^[0-9]*$",
        max_length=20,
        description="resume after this event sequence (the SSE `id:` last seen)",
    ),
]
Types = Annotated[str | None, Query(description="`all` for every event type")]


def _cursor(last_event_id: str | None, since: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise ApiError(422, "Last-Event-ID must be an event sequence number")
        return int(last_event_id)
    return since


def _sse(
    events: AsyncIterator[Event], *, all_types: bool, with_session: bool, ping_s: float
) -> EventSourceResponse:
    async def frames() -> AsyncIterator[ServerSentEvent]:
        _metrics.OPEN_STREAMS.labels("sse").inc()
        try:
            async for event in events:
                external = to_external(event, all_types=all_types, with_session=with_session)
                if external is None:
                    continue
                type_, data = external
                _metrics.STREAM_EVENTS.labels("sse").inc()
                yield ServerSentEvent(
                    data=orjson.dumps(data).decode(),
                    event=type_,
                    id=str(event.seq) if event.seq is not None else None,
                )
        finally:
            _metrics.OPEN_STREAMS.labels("sse").dec()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()  # the consumer ends with the client

    return EventSourceResponse(
        frames(),
        ping=ping_s,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/sessions/{sid}/events", response_class=EventSourceResponse)
async def session_events(
    request: Request,
    caller: Caller,
    sid: str,
    *,
    since: Since = None,
    types: Types = None,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """The session's events as SSE. Starts after `Last-Event-ID` or `since`; without either,
    after the position recorded when the last prompt was accepted; for a session never
    prompted, now."""
    gateway = gateway_of(request)
    await session_state(gateway, caller, sid)
    cursor = _cursor(last_event_id, since)
    if cursor is None:
        cursor = await gateway.directory.watermark(caller.tenant, sid)
    if cursor is None:
        cursor = await gateway.position()
    events = gateway.fleet(caller.tenant).subscribe(sid=sid, since=cursor)
    return _sse(
        events, all_types=types == "all", with_session=False, ping_s=gateway.config.sse_ping_s
    )


@router.get("/v1/groups/{gid}/events", response_class=EventSourceResponse)
async def group_events(
    request: Request,
    caller: Caller,
    gid: str,
    *,
    since: Since = None,
    types: Types = None,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Every event of every session of the group in the caller's tenant, each `data` with
    its `sessionId`. Starts after the cursor, else now."""
    if not is_token(gid) or gid == "_":
        raise ApiError(404, f"no group {gid!r}")
    gateway = gateway_of(request)
    cursor = _cursor(last_event_id, since)
    events = gateway.fleet(caller.tenant).subscribe(
        group=gid,
        tenant=caller.tenant,
        since=await gateway.position() if cursor is None else cursor,
    )
    return _sse(
        events, all_types=types == "all", with_session=True, ping_s=gateway.config.sse_ping_s
    )


# -- WebSocket -----------------------------------------------------------------------------
Action = Callable[[Gateway, Principal, str, Any], Awaitable[str]]


async def _prompt(gateway: Gateway, caller: Principal, sid: str, body: PromptRequest) -> str:
    return (await do_prompt(gateway, caller, sid, body)).request_id


_ACTIONS: dict[str, tuple[type[BaseModel], Action]] = {
    "prompt": (PromptRequest, _prompt),
    "approve": (ApproveRequest, do_approve),
    "reject": (RejectRequest, do_reject),
    "respond": (RespondRequest, do_respond),
    "steer": (SteerRequest, do_steer),
    "abort": (AbortRequest, do_abort),
}


@router.websocket("/v1/sessions/{sid}/ws")
async def session_socket(websocket: WebSocket, sid: str, since: Since = None) -> None:
    """Actions in, one reply per action (sent before any event it causes), events out."""
    gateway: Gateway = websocket.app.state.gateway
    key = presented_key(websocket.headers) or websocket.query_params.get("api_key")
    caller = gateway.keys.authenticate(key)
    if caller is None:
        _metrics.AUTH_FAILURES.inc()
        await _deny(websocket, ApiError(401, "a valid API key is required"))
        return
    try:
        await admit(gateway, caller)
        await session_state(gateway, caller, sid)
        start = await gateway.position() if since is None else since
    except ApiError as exc:
        await _deny(websocket, exc)
        return
    except UNREACHABLE as exc:
        await _deny(websocket, unavailable(exc))
        return
    await websocket.accept()
    _metrics.OPEN_STREAMS.labels("ws").inc()
    lock = asyncio.Lock()  # an action's reply goes out before the events it causes
    events = gateway.fleet(caller.tenant).subscribe(sid=sid, since=start)
    forward = asyncio.create_task(_forward(websocket, events, lock))
    try:
        while True:
            try:
                raw = await websocket.receive_text()
            except WebSocketDisconnect:
                return
            async with lock:
                await websocket.send_json(await _act(gateway, caller, sid, raw))
    finally:
        forward.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await forward
        await events.aclose()  # type: ignore[attr-defined]
        _metrics.OPEN_STREAMS.labels("ws").dec()


async def _deny(websocket: WebSocket, refusal: ApiError) -> None:
    """Refuse before the upgrade with the HTTP status when the server can; else accept and
    close at once with code 4000 + status (4401, 4404, 4429, 4503)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            error_response(refusal.status, refusal.code, refusal.message, refusal.headers)
        )
        return
    await websocket.accept()
    await websocket.close(code=4000 + refusal.status, reason=refusal.message)


async def _act(gateway: Gateway, caller: Principal, sid: str, raw: str) -> dict[str, Any]:
    """Run one client action; the reply `{ok, action, requestId}` or `{ok: false, ...}`."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _refusal(None, "invalid_json", "a message must be a JSON object")
    if not isinstance(message, dict):
        return _refusal(None, "invalid_json", "a message must be a JSON object")
    action = message.pop("action", None)
    if action not in _ACTIONS:
        return _refusal(action, "invalid_request", f"unknown action {action!r}")
    model, run = _ACTIONS[action]
    try:
        body = model.model_validate(message)
        await admit(gateway, caller)
        request_id = await run(gateway, caller, sid, body)
    except ValidationError as exc:
        return _refusal(action, "invalid_request", describe(list(exc.errors())))
    except ApiError as exc:
        return _refusal(action, exc.code, exc.message)
    except UNREACHABLE as exc:
        refusal = unavailable(exc)
        return _refusal(action, refusal.code, refusal.message)
    return {"ok": True, "action": action, "requestId": request_id}


def _refusal(action: Any, code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "action": action, "error": code, "message": message}


async def _forward(websocket: WebSocket, events: AsyncIterator[Event], lock: asyncio.Lock) -> None:
    try:
        async for event in events:
            external = to_external(event)
            if external is None:
                continue
            async with lock:
                await websocket.send_json(ws_message(event.seq, *external))
            _metrics.STREAM_EVENTS.labels("ws").inc()
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away; the receive loop ends the connection
    except Exception:
        log.exception("gateway: forwarding events of a WebSocket failed")
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)
