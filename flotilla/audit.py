"""Publishing audit records (schemas.AuditEvent v2) on `<prefix>.audit.<tenant>.<action>`.

Shared by the worker (turns, approvals, model switches, checkpoints) and the router (provider
registry changes). Records go out as core NATS publishes, never awaited by a broker: a record
that cannot be sent is logged and counted, and the caller carries on.
"""

from __future__ import annotations

import logging
from typing import Literal

import orjson
from nats.aio.client import Client as NATS
from prometheus_client import Counter

from schemas import AUDIT_ACTIONS, NO_GROUP, AuditEvent, ProviderProfile, Subjects

__all__ = [
    "AUDIT_FAILURES",
    "AUDIT_RECORDS",
    "AuditPublisher",
    "publish_audit",
    "registry_change",
]

log = logging.getLogger(__name__)

AUDIT_RECORDS = Counter(
    "flotilla_audit_records_total", "Audit records published, by action", ["action"]
)
AUDIT_FAILURES = Counter(
    "flotilla_audit_publish_failures_total", "Audit records that could not be published"
)
_KNOWN = frozenset(AUDIT_ACTIONS)


async def publish_audit(nc: NATS, subjects: Subjects, record: AuditEvent) -> bool:
    """Publish one record; False (logged and counted) when it could not be sent."""
    subject = subjects.audit(record.tenant or NO_GROUP, record.action)
    try:
        await nc.publish(subject, orjson.dumps(record.model_dump(mode="json")))
    except Exception as exc:  # an audit sink never takes its publisher down
        AUDIT_FAILURES.inc()
        log.warning("audit record %s not published: %r", record.action, exc)
        return False
    AUDIT_RECORDS.labels(record.action if record.action in _KNOWN else "other").inc()
    return True


class AuditPublisher:
    """`publish_audit` bound to one connection; a no-op when audit is disabled."""

    def __init__(self, nc: NATS, *, subjects: Subjects, enabled: bool = True) -> None:
        self._nc = nc
        self._subjects = subjects
        self.enabled = enabled

    async def publish(self, record: AuditEvent) -> bool:
        if not self.enabled:
            return False
        return await publish_audit(self._nc, self._subjects, record)


def registry_change(
    op: Literal["register", "unregister"],
    *,
    profile: ProviderProfile,
    previous: ProviderProfile | None = None,
    revision: int | None = None,
    actor_id: str | None = None,
) -> AuditEvent:
    """The record of a provider profile registered (or replaced) or unregistered.

    Profiles appear redacted (`***` for secret opts), before and after the change.
    """
    return AuditEvent(
        action=f"provider.registry.{op}",
        actor_type="user",
        actor_id=actor_id,
        target_type="provider_profile",
        target_id=profile.name,
        tenant=profile.tenant,
        before=previous.redacted().model_dump(mode="json") if previous else None,
        after=profile.redacted().model_dump(mode="json") if op == "register" else None,
        metadata={"revision": revision, "provider": profile.provider},
        tags=[f"tenant:{profile.tenant or NO_GROUP}", "via:router"],
    )
