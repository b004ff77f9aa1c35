"""Audit records (CMDC's AuditEvent, schema v2), published on `<prefix>.audit.<tenant>.<action>`.

A record is the 6-tuple of audit logs (actor, action, target, before, after, metadata) with
its time and, since v2, free-form `tags`. Secrets never reach the wire: whatever builds a
record, every key that names a secret (`schemas.is_secret_opt`) in `before`, `after` or
`metadata` is replaced by `"***"` when the record is made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import Field, field_validator

from schemas._base import WireModel
from schemas._ids import Token
from schemas._registry import is_secret_opt

AUDIT_SCHEMA_VERSION: Final = 2
REDACTED: Final = "***"

ActorType = Literal["agent", "user", "plugin", "tool", "system"]

AUDIT_ACTIONS: Final = (
    "agent.turn.start",
    "agent.turn.stop",
    "approval.requested",
    "approval.resolved",
    "agent.model.switch",
    "checkpoint.save",
    "provider.registry.register",
    "provider.registry.unregister",
)
"""The actions this fleet records; readers accept others (later versions add some)."""


def redact_secrets(value: Any) -> Any:
    """`value` with the value of every secret-named key, at any depth, replaced by `***`."""
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_opt(k) else redact_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_secrets(v) for v in value]
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class AuditEvent(WireModel):
    """One audit record; `action` is a dotted namespace (`agent.turn.start`)."""

    schema_version: int = AUDIT_SCHEMA_VERSION
    action: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=128)
    actor_type: ActorType
    actor_id: str | None = None
    """Session id (agent), plugin name, tool name; None for an anonymous client (user)."""
    target_type: str | None = None
    """`agent_session`, `approval`, `checkpoint`, `provider_profile`."""
    target_id: str | None = None
    tenant: Token | None = None
    """The tenant on the subject; None (`_` on the subject) for fleet-wide records."""
    occurred_at: datetime = Field(default_factory=_now)
    before: Any = None
    after: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("before", "after", "metadata")
    @classmethod
    def _no_secrets(cls, value: Any) -> Any:
        return redact_secrets(value)
