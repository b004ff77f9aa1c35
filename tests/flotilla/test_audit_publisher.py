"""flotilla.audit: records on their tenant's subject, redacted, and never a crash of the
publisher."""

from __future__ import annotations

import secrets

import nats
from prometheus_client import REGISTRY

from flotilla.audit import publish_audit, registry_change
from schemas import AuditEvent, ProviderProfile, Subjects

PROFILE = ProviderProfile(
    name="acme-openai",
    provider="openai",
    opts={"api_key": "sk-NEW-1", "base_url": "http://llm.local"},
    tenant="acme",
)


async def _receive(servers: tuple[str, str], record: AuditEvent) -> tuple[str, bytes]:
    """Publish `record` under a fresh prefix; the subject and body it arrived with."""
    subjects = Subjects(f"t{secrets.token_hex(5)}")
    nc = await nats.connect(servers[0])
    try:
        sub = await nc.subscribe(f"{subjects.prefix}.audit.>")
        assert await publish_audit(nc, subjects, record)
        msg = await sub.next_msg(timeout=5)
        return msg.subject.removeprefix(f"{subjects.prefix}."), msg.data
    finally:
        await nc.close()


async def test_a_registered_profile_is_recorded_redacted_on_its_tenant(
    servers: tuple[str, str],
) -> None:
    previous = PROFILE.model_copy(update={"opts": {"api_key": "sk-OLD-0"}})
    record = registry_change("register", profile=PROFILE, previous=previous, revision=7)
    subject, data = await _receive(servers, record)
    assert subject == "audit.acme.provider_registry_register"
    received = AuditEvent.model_validate_json(data)
    assert (received.target_type, received.target_id) == ("provider_profile", "acme-openai")
    assert received.after["opts"] == {"api_key": "***", "base_url": "http://llm.local"}
    assert received.before["opts"] == {"api_key": "***"}
    assert received.metadata["revision"] == 7 and b"sk-" not in data


async def test_a_fleet_wide_profile_is_recorded_under_the_no_tenant_token(
    servers: tuple[str, str],
) -> None:
    fleet_wide = PROFILE.model_copy(update={"tenant": None})
    subject, data = await _receive(servers, registry_change("unregister", profile=fleet_wide))
    assert subject == "audit._.provider_registry_unregister"
    assert AuditEvent.model_validate_json(data).after is None


async def test_a_record_that_cannot_be_sent_is_counted_not_raised(
    servers: tuple[str, str],
) -> None:
    before = REGISTRY.get_sample_value("flotilla_audit_publish_failures_total") or 0.0
    nc = await nats.connect(servers[0])
    await nc.close()
    sent = await publish_audit(nc, Subjects("t0"), registry_change("register", profile=PROFILE))
    assert sent is False
    assert REGISTRY.get_sample_value("flotilla_audit_publish_failures_total") == before + 1
