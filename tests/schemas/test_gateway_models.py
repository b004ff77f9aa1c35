"""HTTP bodies of the gateway: camelCase on the wire, strict requests, internal options."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from schemas import (
    GATEWAY_MODELS,
    ApproveRequest,
    CreateSessionRequest,
    PendingApprovalView,
    PluginSpec,
    RejectRequest,
    SessionDetail,
    SessionOptions,
    ToolRequest,
    export_json_schemas,
)


def test_responses_dump_in_camel_case() -> None:
    detail = SessionDetail(
        session_id="s1",
        state="waiting_approval",
        turns=1,
        tool_calls=2,
        total_tokens=30,
        uptime_ms=5,
        model="mock:echo",
        pending_approvals=[PendingApprovalView(approval_id="a1", tool_name="shell", args={})],
    )
    assert detail.model_dump(by_alias=True) == {
        "sessionId": "s1",
        "state": "waiting_approval",
        "turns": 1,
        "toolCalls": 2,
        "totalTokens": 30,
        "uptimeMs": 5,
        "model": "mock:echo",
        "groupId": None,
        "parentId": None,
        "pendingApprovals": [{"approvalId": "a1", "toolName": "shell", "args": {}}],
    }


def test_a_plain_dump_is_camel_case_too() -> None:
    assert "approvalId" in orjson.loads(ApproveRequest(approval_id="a1").model_dump_json())


def test_requests_read_camel_case_and_snake_case() -> None:
    by_alias = RejectRequest.model_validate({"approvalId": "a1", "autoResume": False})
    by_name = RejectRequest(approval_id="a1", auto_resume=False)
    assert by_alias == by_name and by_alias.auto_resume is False


def test_reject_resumes_by_default_over_http() -> None:
    assert RejectRequest.model_validate({"approvalId": "a1"}).auto_resume is True


def test_unknown_request_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="maxTurn"):
        CreateSessionRequest.model_validate({"model": "mock:echo", "maxTurn": 3})


def test_unknown_field_of_a_nested_request_part_is_refused() -> None:
    body = {"model": "mock:echo", "subagents": [{"name": "r", "systemPromt": "x"}]}
    with pytest.raises(ValidationError, match="systemPromt"):
        CreateSessionRequest.model_validate(body)


def test_approve_kind_is_once_or_always() -> None:
    assert ApproveRequest.model_validate({"approvalId": "a1", "kind": "always"}).kind == "always"
    with pytest.raises(ValidationError):
        ApproveRequest.model_validate({"approvalId": "a1", "kind": "forever"})


def test_bad_identifier_is_refused() -> None:
    with pytest.raises(ValidationError):
        CreateSessionRequest.model_validate({"model": "mock:echo", "sessionId": "a.b"})


def test_tool_callback_url_must_be_http() -> None:
    body = {"name": "t", "description": "", "parameters": {}, "callbackUrl": "file:///etc"}
    with pytest.raises(ValidationError, match="callbackUrl"):
        ToolRequest.model_validate(body)


def test_to_options_maps_to_snake_case_and_keeps_only_what_was_set() -> None:
    request = CreateSessionRequest.model_validate(
        {
            "model": "mock:echo",
            "sessionId": "s1",
            "systemPrompt": "be brief",
            "groupId": "room-1",
            "maxTurns": 5,
            "skillsDirs": ["skills"],
            "userData": {"camelKey": 1, "snake_key": 2},
            "blueprint": None,
        }
    )
    assert request.to_options() == {
        "model": "mock:echo",
        "system_prompt": "be brief",
        "group_id": "room-1",
        "max_turns": 5,
        "skills_dirs": ["skills"],
        "user_data": {"camelKey": 1, "snake_key": 2},
    }


def test_to_options_converts_nested_parts_and_validates_as_session_options() -> None:
    request = CreateSessionRequest.model_validate(
        {
            "model": "mock:script",
            "plugins": ["cost_guard", {"name": "skill_guard", "opts": {"max_usd": 1}}],
            "subagents": [{"name": "researcher", "systemPrompt": "dig", "promptMode": "minimal"}],
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "toolCalls": [{"callId": "c1", "name": "grep", "arguments": {"a_b": 1}}],
                },
                {"role": "tool_result", "callId": "c1", "content": "ok", "isError": False},
            ],
            "providerOpts": {"script": [{"text": "done"}]},
            "webhook": {"url": "https://example.com/hook"},
        }
    )
    options = SessionOptions.model_validate(request.to_options())
    assert options.subagents[0].system_prompt == "dig"
    assert options.subagents[0].prompt_mode == "minimal"
    assert options.messages[1].tool_calls == [
        {"call_id": "c1", "name": "grep", "arguments": {"a_b": 1}}
    ]
    assert options.messages[2].call_id == "c1" and options.messages[2].is_error is False
    assert options.webhook is not None
    assert options.webhook.events == ["agent_end", "error", "approval_required"]
    assert options.plugins == ["cost_guard", PluginSpec(name="skill_guard", opts={"max_usd": 1})]


def test_json_schema_export_includes_the_http_bodies(tmp_path: Path) -> None:
    names = {path.name for path in export_json_schemas(tmp_path)}
    assert {f"gateway.{to_snake(model.__name__)}.schema.json" for model in GATEWAY_MODELS} <= names
    assert {"gateway.create_session_request.schema.json", "gateway.ok.schema.json"} <= names
    schema = orjson.loads((tmp_path / "gateway.create_session_request.schema.json").read_bytes())
    assert "systemPrompt" in schema["properties"] and schema["additionalProperties"] is False
