"""Internal events as the gateway sends them: the 15 cmdc_gateway types and `?types=all`."""

from __future__ import annotations

from typing import Any

import pytest

from gateway._external import (
    EXTERNAL_TYPES,
    USER_CONTENT_KEYS,
    camel_keys,
    to_external,
    ws_message,
)
from schemas import EVENT_CATALOG, Event


def event(type_: str, data: dict[str, Any], **envelope: Any) -> Event:
    fields: dict[str, Any] = {"sid": "s1", "tenant": "acme", "ts": 1, "seq": 7}
    return Event(type=type_, data=data, **(fields | envelope))


def sent(type_: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    out = to_external(event(type_, data, **envelope))
    assert out is not None and out[0] == type_
    return out[1]


def test_the_fifteen_types_of_cmdc_gateway() -> None:
    assert len(EXTERNAL_TYPES) == 15
    assert EVENT_CATALOG.keys() >= EXTERNAL_TYPES


@pytest.mark.parametrize("type_", ["agent_start", "message_start", "thinking_start"])
def test_start_events_carry_no_data(type_: str) -> None:
    assert sent(type_, {}) == {}


def test_agent_end() -> None:
    data = {
        "reason": "finished",
        "last_message": {"role": "assistant", "content": "hi"},
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "total_tokens": 12,
            "cached_tokens": 4,
            "cost_usd": 0.5,
        },
    }
    assert sent("agent_end", data) == {
        "reason": "finished",
        "lastMessage": {"role": "assistant", "content": "hi"},
        "tokenUsage": {"promptTokens": 10, "completionTokens": 2, "totalTokens": 12},
        "costUsd": 0.5,
    }


def test_agent_end_without_a_message() -> None:
    data: dict[str, Any] = {"reason": "error", "last_message": None, "usage": {}}
    assert sent("agent_end", data)["lastMessage"] is None


def test_agent_end_of_a_failed_turn_says_so() -> None:
    usage = dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"), 0)
    error = {"code": "auth", "message": "mock provider error: auth", "provider": "mock"}
    data = {"reason": "error", "last_message": None, "usage": usage, "error": error}
    end = sent("agent_end", data)
    assert end["reason"] == "error"
    assert end["error"] == {"code": "auth", "message": "mock provider error: auth"}


def test_agent_abort() -> None:
    assert sent("agent_abort", {"reason": "user_cancelled"}) == {"reason": "user_cancelled"}


def test_error_sends_the_message_as_reason() -> None:
    data = {"code": "rate_limit", "message": "slow down", "command_id": "c1"}
    assert sent("error", data) == {"reason": "slow down", "code": "rate_limit"}


def test_prompt_received_carries_the_request_id_of_the_envelope() -> None:
    data = sent("prompt_received", {"text": "hello", "queued": True}, request_id="0123abcd")
    assert data == {"text": "hello", "requestId": "0123abcd", "queued": True}


@pytest.mark.parametrize("type_", ["message_delta", "thinking_delta"])
def test_deltas(type_: str) -> None:
    assert sent(type_, {"delta": "Hel"}) == {"delta": "Hel"}


def test_tool_calls() -> None:
    assert sent("tool_calls", {"count": 2}) == {"count": 2}


def test_tool_execution_start() -> None:
    data = {"name": "read_file", "call_id": "c1", "args": {"file_path": "a.txt"}}
    assert sent("tool_execution_start", data) == {
        "toolName": "read_file",
        "callId": "c1",
        "args": {"file_path": "a.txt"},
    }


def test_tool_execution_end() -> None:
    data = {"name": "shell", "call_id": "c2", "status": "error", "result": "exit 1"}
    assert sent("tool_execution_end", data) == {
        "toolName": "shell",
        "callId": "c2",
        "status": "error",
        "result": "exit 1",
    }


def test_approval_required() -> None:
    data = {
        "approval_id": "a1",
        "tool": "shell",
        "args": {"cmd": "rm -rf build"},
        "hint": "deletes files",
        "requested_at": 5,
    }
    assert sent("approval_required", data) == {
        "approvalId": "a1",
        "toolName": "shell",
        "args": {"cmd": "rm -rf build"},
        "hint": "deletes files",
    }


def test_approval_resolved() -> None:
    data = {"approval_id": "a1", "tool": "shell", "status": "approved", "kind": "always"}
    assert sent("approval_resolved", data) == {
        "approvalId": "a1",
        "toolName": "shell",
        "status": "approved",
    }


def test_ask_user() -> None:
    data = {"ref": "q1", "question": "which?", "options": ["a", "b"]}
    assert sent("ask_user", data) == {"ref": "q1", "question": "which?", "options": ["a", "b"]}


def test_ask_user_without_options_sends_null() -> None:
    assert sent("ask_user", {"ref": "q1", "question": "name?"})["options"] is None


def test_other_types_are_not_sent_by_default() -> None:
    assert to_external(event("llm_call", {"model": "mock:echo"})) is None
    assert to_external(event("session_created", {})) is None


def test_all_types_sends_every_other_type_in_camel_case() -> None:
    data = {"attempt": 2, "delay_ms": 500, "reason": "rate_limit"}
    out = to_external(event("retry", data), all_types=True)
    assert out == ("retry", {"attempt": 2, "delayMs": 500, "reason": "rate_limit"})


def test_all_types_keeps_the_table_for_the_fifteen() -> None:
    data = {"name": "shell", "call_id": "c1", "args": {}}
    out = to_external(event("tool_execution_start", data), all_types=True)
    assert out == ("tool_execution_start", {"toolName": "shell", "callId": "c1", "args": {}})


def test_all_types_camel_cases_structure_but_not_user_content() -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"call_id": "c1", "name": "grep", "arguments": {"max_count": 3}}],
    }
    out = to_external(event("response_complete", {"message": message}), all_types=True)
    assert out is not None
    assert out[1] == {
        "message": {
            "role": "assistant",
            "content": "",
            "toolCalls": [{"callId": "c1", "name": "grep", "arguments": {"max_count": 3}}],
        }
    }


def test_plugin_payload_and_user_answers_pass_verbatim() -> None:
    payload = {"snake_key": {"inner_key": 1}}
    plugin = to_external(
        event("plugin_event", {"plugin": "p", "kind": "k_x", "payload": payload}), all_types=True
    )
    answer = to_external(event("user_responded", {"ref": "q", "response": payload}), all_types=True)
    assert plugin == ("plugin_event", {"plugin": "p", "kind": "k_x", "payload": payload})
    assert answer == ("user_responded", {"ref": "q", "response": payload})


def test_only_snake_case_keys_are_rewritten() -> None:
    data = {"X-Trace": 1, "toolName": 2, "cost_usd": 3, "from": 4, "loop_count": "a_b"}
    assert camel_keys(data) == {
        "X-Trace": 1,
        "toolName": 2,
        "costUsd": 3,
        "from": 4,
        "loopCount": "a_b",
    }


def _is_free_form(annotation: Any) -> bool:
    return annotation is Any or "typing.Any" in str(annotation)


def test_every_free_form_event_field_is_classified() -> None:
    """A new free-form field must be declared user content or reviewed as structure."""
    structure = {"message", "todos"}  # an assistant message; write_todos' {id, content, status}
    free_form = {
        name
        for spec in EVENT_CATALOG.values()
        for name, field in spec.data.model_fields.items()
        if _is_free_form(field.annotation)
    }
    assert free_form - structure <= USER_CONTENT_KEYS
    assert free_form >= {"args", "payload", "response", "message", "todos"}


def test_group_streams_carry_the_session_id() -> None:
    out = to_external(event("message_delta", {"delta": "x"}, sid="child"), with_session=True)
    assert out == ("message_delta", {"delta": "x", "sessionId": "child"})


def test_group_streams_carry_the_session_id_on_other_types() -> None:
    out = to_external(event("compact_end", {"removed_count": 3}), all_types=True, with_session=True)
    assert out == ("compact_end", {"removedCount": 3, "sessionId": "s1"})


def test_stream_gap_is_always_sent() -> None:
    out = to_external(event("stream_gap", {"requested": 3, "first_available": 40}))
    assert out == ("stream_gap", {"requested": 3, "firstAvailable": 40})


def test_a_malformed_event_is_still_sent_in_the_generic_form() -> None:
    out = to_external(event("tool_execution_start", {"name": "shell", "call_id": "c1"}))
    assert out == ("tool_execution_start", {"name": "shell", "callId": "c1"})


def test_ws_message() -> None:
    assert ws_message(7, "tool_calls", {"count": 1}) == {
        "event": "tool_calls",
        "id": 7,
        "data": {"count": 1},
    }
