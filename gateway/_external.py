"""Internal events (PROTOCOL §4) as the gateway sends them (§8): cmdc_gateway's 15 types.

The 15 types get exactly the camelCase data of the §8 table. With `?types=all` every other
type is sent too, its data rewritten by one rule: a key is camelCased (`call_id` → `callId`)
when it is lower snake_case, recursively through dicts and lists, except under the keys of
`USER_CONTENT_KEYS`, whose values belong to the user, the LLM or a plugin (tool arguments and
results, `payload`, `response`, `user_data`...) and pass through untouched. Values are never
rewritten, only keys; a key that is not lower snake_case (`X-Trace`, `toolName`) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from schemas import EVENT_CATALOG, Event

__all__ = [
    "EXTERNAL_TYPES",
    "USER_CONTENT_KEYS",
    "camel_keys",
    "to_external",
    "ws_message",
]

EXTERNAL_TYPES: frozenset[str] = frozenset(
    {
        "agent_start",
        "agent_end",
        "agent_abort",
        "prompt_received",
        "message_start",
        "message_delta",
        "thinking_start",
        "thinking_delta",
        "tool_calls",
        "tool_execution_start",
        "tool_execution_end",
        "approval_required",
        "approval_resolved",
        "ask_user",
        "error",
    }
)
"""The event types of cmdc_gateway: the only ones a stream carries without `?types=all`."""

USER_CONTENT_KEYS: frozenset[str] = frozenset(
    {
        "args",  # tool arguments, as the LLM wrote them
        "arguments",  # the same, in a message's tool calls
        "result",  # tool and sub-agent results
        "response",  # the user's answer to ask_user
        "payload",  # plugin events
        "user_data",
        "provider_opts",
        "opts",
        "parameters",  # a tool's JSON Schema: its property names are the tool's own
        "meta",  # echoed from the client's command
    }
)
"""Keys whose values are content, not contract structure: sent verbatim."""

_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


def _camel(key: str) -> str:
    if _SNAKE.fullmatch(key) is None:
        return key
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def camel_keys(value: Any) -> Any:
    """`value` with its dict keys camelCased by the module's rule (content left alone)."""
    if isinstance(value, dict):
        return {_camel(k): v if k in USER_CONTENT_KEYS else camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def _empty(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {}


def _delta(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"delta": data["delta"]}


def _agent_end(data: dict[str, Any], event: Event) -> dict[str, Any]:
    last, usage = data["last_message"], data["usage"]
    external = {
        "reason": data["reason"],  # a failed turn must not look finished (§8)
        "lastMessage": None if last is None else {"role": last["role"], "content": last["content"]},
        "tokenUsage": {
            "promptTokens": usage["prompt_tokens"],
            "completionTokens": usage["completion_tokens"],
            "totalTokens": usage["total_tokens"],
        },
        "costUsd": usage["cost_usd"],
    }
    error = data.get("error")
    if error is not None:
        external["error"] = {"code": error.get("code"), "message": error.get("message")}
    return external


def _agent_abort(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"reason": data["reason"]}


def _error(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"reason": data["message"], "code": data["code"]}


def _prompt_received(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"text": data["text"], "requestId": event.request_id, "queued": data["queued"]}


def _tool_calls(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"count": data["count"]}


def _tool_execution_start(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"toolName": data["name"], "callId": data["call_id"], "args": data["args"]}


def _tool_execution_end(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {
        "toolName": data["name"],
        "callId": data["call_id"],
        "status": data["status"],
        "result": data["result"],
    }


def _approval_required(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {
        "approvalId": data["approval_id"],
        "toolName": data["tool"],
        "args": data["args"],
        "hint": data["hint"],
    }


def _approval_resolved(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"approvalId": data["approval_id"], "toolName": data["tool"], "status": data["status"]}


def _ask_user(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"ref": data["ref"], "question": data["question"], "options": data["options"]}


def _stream_gap(data: dict[str, Any], event: Event) -> dict[str, Any]:
    return {"requested": data["requested"], "firstAvailable": data["first_available"]}


_Translate = Callable[[dict[str, Any], Event], dict[str, Any]]

_TRANSLATIONS: dict[str, _Translate] = {
    "agent_start": _empty,
    "agent_end": _agent_end,
    "agent_abort": _agent_abort,
    "prompt_received": _prompt_received,
    "message_start": _empty,
    "message_delta": _delta,
    "thinking_start": _empty,
    "thinking_delta": _delta,
    "tool_calls": _tool_calls,
    "tool_execution_start": _tool_execution_start,
    "tool_execution_end": _tool_execution_end,
    "approval_required": _approval_required,
    "approval_resolved": _approval_resolved,
    "ask_user": _ask_user,
    "error": _error,
    # not a cmdc_gateway type, but a reader must never miss that its cursor was too old
    "stream_gap": _stream_gap,
}


def _translated(event: Event, translate: _Translate) -> dict[str, Any]:
    try:  # validating fills the defaults the table relies on (`queued`, `hint`, `options`)
        data = EVENT_CATALOG[event.type].data.model_validate(event.data).model_dump(by_alias=True)
    except ValidationError:  # a malformed event is still sent, in the generic form
        generic: dict[str, Any] = camel_keys(event.data)
        return generic
    return translate(data, event)


def to_external(
    event: Event, *, all_types: bool = False, with_session: bool = False
) -> tuple[str, dict[str, Any]] | None:
    """The (type, camelCase data) the gateway sends for `event`, or None when it is not sent."""
    translate = _TRANSLATIONS.get(event.type)
    if translate is not None:
        data = _translated(event, translate)
    elif all_types:
        data = camel_keys(event.data)
    else:
        return None
    if with_session:
        data["sessionId"] = event.sid
    return event.type, data


def ws_message(seq: int | None, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    """A server → client WebSocket message: `{"event", "id", "data"}`."""
    return {"event": type_, "id": seq, "data": data}
