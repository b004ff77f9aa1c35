"""AuditEvent v2: secrets never reach a record, whoever builds it."""

from __future__ import annotations

from schemas import AUDIT_SCHEMA_VERSION, AuditEvent


def test_secret_named_keys_are_redacted_at_any_depth() -> None:
    record = AuditEvent(
        action="agent.model.switch",
        actor_type="user",
        before={"provider_opts": {"api_key": "k", "extra": [{"client_secret": "s", "n": 1}]}},
        after={"access_token": "t", "model": "m"},
        metadata={"webhook_secret": "w", "prompt_tokens": 3},
    )
    assert record.before == {
        "provider_opts": {"api_key": "***", "extra": [{"client_secret": "***", "n": 1}]}
    }
    assert record.after == {"access_token": "***", "model": "m"}
    assert record.metadata == {"webhook_secret": "***", "prompt_tokens": 3}


def test_a_record_carries_schema_version_2_and_reads_back_from_json() -> None:
    record = AuditEvent(action="checkpoint.save", actor_type="user", tags=["tenant:acme"])
    again = AuditEvent.model_validate_json(record.model_dump_json())
    assert again == record and again.schema_version == AUDIT_SCHEMA_VERSION == 2
