"""The wire contract: identifiers, subjects, unions, JSON Schema export."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import (
    COMMAND_ADAPTER,
    EVENT_CATALOG,
    GATEWAY_MODELS,
    Subjects,
    export_json_schemas,
    is_token,
    validate_event,
)


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 64])
def test_valid_tokens(value: str) -> None:
    assert is_token(value)


@pytest.mark.parametrize("value", ["", "a.b", "a*", "a>", "a b", "x" * 65, "ü"])
def test_tokens_that_would_break_subjects_are_refused(value: str) -> None:
    assert not is_token(value)


def test_subjects_follow_the_protocol() -> None:
    s = Subjects("flotilla")
    assert s.cmd("acme", "s1", "prompt") == "flotilla.cmd.acme.s1.prompt"
    assert (
        s.evt("acme", None, "s1", "progress", "agent_end")
        == "flotilla.evt.acme._.s1.progress.agent_end"
    )
    assert s.evt_group("room") == "flotilla.evt.*.room.>"
    assert s.cmd_stream == "FLOTILLA_CMD" and s.evt_stream == "FLOTILLA_EVT"
    parsed = s.parse_stored_cmd("flotilla.cmd.7.acme.s1.prompt")
    assert parsed is not None and (parsed.shard, parsed.tenant, parsed.op) == (7, "acme", "prompt")


def test_commands_are_a_discriminated_union_ignoring_unknown_fields() -> None:
    command = COMMAND_ADAPTER.validate_json(b'{"op": "abort", "future_field": 1}')
    assert command.op == "abort" and command.kill_tools == "default"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        COMMAND_ADAPTER.validate_json(b'{"op": "launch"}')


def test_cmdc_tool_aliases_are_accepted() -> None:
    create = COMMAND_ADAPTER.validate_python(
        {"op": "create", "model": "mock:echo", "tools": ["CMDC.Tool.ReadFile", "shell"]}
    )
    assert create.tools == ["read_file", "shell"]  # type: ignore[union-attr]


def test_model_without_provider_is_refused() -> None:
    with pytest.raises(ValidationError):
        COMMAND_ADAPTER.validate_python({"op": "create", "model": "gpt-4o"})


def test_events_validate_against_their_type() -> None:
    good = b'{"type":"agent_abort","sid":"s","tenant":"t","ts":1,"data":{"reason":"x"}}'
    assert validate_event(good).data.reason == "x"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        validate_event(b'{"type":"agent_abort","sid":"s","tenant":"t","ts":1,"data":{}}')


def test_every_event_has_a_channel() -> None:
    assert {spec.channel for spec in EVENT_CATALOG.values()} == {"progress", "control", "monitor"}


def test_json_schema_export_writes_every_type(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    names = {p.name for p in written}
    assert "command.schema.json" in names and "event.agent_end.schema.json" in names
    assert "audit_event.schema.json" in names
    assert len(names) == 6 + len(EVENT_CATALOG) + len(GATEWAY_MODELS)
