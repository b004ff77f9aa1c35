"""Audit records (AuditEvent v2) of turns, approvals, model switches and checkpoints on
`<prefix>.audit.<tenant>.<action>`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.msg import Msg

from flotilla import Session
from schemas import AuditEvent
from tests.conftest import Harness, eventually
from tests.engine_helpers import call, script, until, until_end

PLUGIN = "tests.workers.scripted_plugin:ScriptedPlugin"
WRITE = call("write_file", path="a.txt", content="x")


class AuditLog:
    """Every audit record the fleet publishes, with its subject and raw bytes."""

    def __init__(self) -> None:
        self.records: list[tuple[str, AuditEvent]] = []
        self.raw: list[bytes] = []

    async def on_message(self, msg: Msg) -> None:
        self.raw.append(msg.data)
        self.records.append((msg.subject, AuditEvent.model_validate_json(msg.data)))

    async def wait(self, action: str, count: int = 1) -> list[AuditEvent]:
        """The records of `action`, once there are `count` of them."""
        await eventually(lambda: len(self.of(action)) >= count, what=f"{count} x {action}")
        return self.of(action)

    def of(self, action: str) -> list[AuditEvent]:
        return [record for _, record in self.records if record.action == action]

    def subject_of(self, action: str) -> str:
        return next(subject for subject, record in self.records if record.action == action)


@pytest.fixture
async def audit(fleet: Harness) -> AsyncIterator[AuditLog]:
    log = AuditLog()
    assert fleet.nc is not None
    sub = await fleet.nc.subscribe(f"{fleet.settings.prefix}.audit.>", cb=log.on_message)
    await fleet.nc.flush()
    yield log
    await sub.unsubscribe()


async def _session(fleet: Harness, *steps: dict[str, Any], **options: Any) -> Session:
    assert fleet.fleet is not None
    options.setdefault("model", "mock:script")
    return await fleet.fleet.create_agent(provider_opts=script(*steps), **options)


async def test_a_turn_is_recorded_when_it_starts_and_when_it_stops(
    fleet: Harness, audit: AuditLog
) -> None:
    session = await _session(fleet, {"text": "hello"})
    command_id = await session.prompt("go")
    await until_end(session)
    (start,) = await audit.wait("agent.turn.start")
    (stop,) = await audit.wait("agent.turn.stop")
    prefix = fleet.settings.prefix
    assert audit.subject_of("agent.turn.start") == f"{prefix}.audit.acme.agent_turn_start"
    assert audit.subject_of("agent.turn.stop") == f"{prefix}.audit.acme.agent_turn_stop"
    assert (start.schema_version, start.tenant, start.actor_type) == (2, "acme", "agent")
    assert (start.actor_id, start.target_type, start.target_id) == (
        session.sid,
        "agent_session",
        session.sid,
    )
    assert start.metadata["request_id"] == command_id and "tenant:acme" in start.tags
    assert stop.metadata["outcome"] == "finished" and stop.metadata["reason"] == "finished"
    assert stop.metadata["usage"]["completion_tokens"] > 0 and stop.metadata["turn"] == 1


async def test_the_audit_stream_keeps_the_records_for_later_readers(
    fleet: Harness, audit: AuditLog
) -> None:
    session = await _session(fleet, {"text": "kept"})
    await session.prompt("go")
    await until_end(session)
    (live,) = await audit.wait("agent.turn.stop")
    assert fleet.nc is not None
    subject = fleet.settings.subjects.audit("acme", "agent.turn.stop")
    js = fleet.nc.jetstream()
    stored = await js.get_last_msg(fleet.settings.subjects.audit_stream, subject)
    assert AuditEvent.model_validate_json(stored.data) == live


async def test_an_aborted_turn_is_recorded_with_the_reason(fleet: Harness, audit: AuditLog) -> None:
    session = await _session(fleet, {"text": "a long answer in many pieces", "chunk_delay_ms": 50})
    await session.prompt("go")
    await until(session, "message_delta")
    await session.send("abort", reason="enough")
    await until_end(session)
    (stop,) = await audit.wait("agent.turn.stop")
    assert stop.metadata["outcome"] == "aborted" and stop.metadata["reason"] == "enough"


async def test_an_approval_is_recorded_when_requested_and_when_resolved(
    fleet: Harness, audit: AuditLog
) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "done"},
        tools=["write_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"]}}],
    )
    await session.prompt("go")
    asked = (await until(session, "approval_required"))[-1].data
    command_id = await session.approve(asked["approval_id"])
    await until_end(session)
    (requested,) = await audit.wait("approval.requested")
    (resolved,) = await audit.wait("approval.resolved")
    assert (requested.target_type, requested.target_id) == ("approval", asked["approval_id"])
    assert requested.after == {"status": "pending"} and requested.metadata["tool"] == "write_file"
    assert (resolved.actor_type, resolved.target_id) == ("user", asked["approval_id"])
    assert resolved.before == {"status": "pending"}
    assert resolved.after == {"status": "approved", "kind": "once"}
    assert resolved.metadata["request_id"] == command_id


async def test_an_expired_approval_is_recorded_as_resolved_by_the_system(
    fleet: Harness, audit: AuditLog
) -> None:
    session = await _session(
        fleet,
        {"tool_calls": [WRITE]},
        {"text": "understood"},
        tools=["write_file"],
        plugins=[{"name": "human_approval", "opts": {"tools": ["write_file"], "timeout_ms": 100}}],
    )
    await session.prompt("go")
    await until_end(session)
    (resolved,) = await audit.wait("approval.resolved")
    assert (resolved.actor_type, resolved.actor_id) == ("system", "approval_timeout")
    assert resolved.after == {"status": "rejected", "kind": "timeout"}


async def test_a_model_switch_is_recorded_before_and_after_without_secrets(
    fleet: Harness, audit: AuditLog
) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(
        model="mock:echo", provider_opts={"api_key": "sk-OLD-123", "temperature": 0.5}
    )
    command_id = await session.switch_model(
        "mock:script", provider_opts={"api_key": "sk-NEW-456", "script": []}
    )
    await until(session, "model_switched")
    (switch,) = await audit.wait("agent.model.switch")
    assert switch.actor_type == "user" and switch.metadata["request_id"] == command_id
    assert switch.before == {
        "model": "mock:echo",
        "provider_opts": {"api_key": "***", "temperature": 0.5},
    }
    assert switch.after == {
        "model": "mock:script",
        "provider_opts": {"api_key": "***", "script": []},
    }
    assert not [raw for raw in audit.raw if b"sk-" in raw]


async def test_a_model_switch_by_a_plugin_is_recorded_as_the_plugins(
    harness_factory: Any,
) -> None:
    fleet = await (await harness_factory(custom_plugins=(PLUGIN,))).start_fleet("w1")
    log = AuditLog()
    assert fleet.nc is not None
    await fleet.nc.subscribe(f"{fleet.settings.prefix}.audit.>", cb=log.on_message)
    opts = {"actions": {"before_request": {"kind": "switch_model", "model": "mock:echo"}}}
    session = await _session(fleet, {"text": "x"}, plugins=[{"name": "scripted", "opts": opts}])
    await session.prompt("go")
    await until_end(session)
    (switch,) = await log.wait("agent.model.switch")
    assert switch.actor_type == "plugin"
    assert (switch.before["model"], switch.after["model"]) == ("mock:script", "mock:echo")


async def test_a_checkpoint_is_recorded_with_its_label_and_size(
    fleet: Harness, audit: AuditLog
) -> None:
    session = await _session(fleet, {"text": "x"})
    command_id = await session.send("checkpoint", label="before-refactor")
    saved = (await until(session, "checkpoint_saved"))[-1].data
    (record,) = await audit.wait("checkpoint.save")
    assert (record.target_type, record.target_id) == ("checkpoint", saved["checkpoint_id"])
    assert record.after == {"label": "before-refactor", "bytes": saved["bytes"]}
    assert record.actor_type == "user" and record.metadata["request_id"] == command_id


async def test_nothing_is_recorded_when_audit_is_disabled(harness_factory: Any) -> None:
    fleet = await (await harness_factory(audit_enabled=False)).start_fleet("w1")
    seen: list[str] = []

    async def on_message(msg: Msg) -> None:
        seen.append(msg.subject)

    assert fleet.nc is not None
    # one subscription for events and audit: the worker publishes both on one connection, so
    # the first turn's records would arrive before the second turn's agent_start
    await fleet.nc.subscribe(f"{fleet.settings.prefix}.>", cb=on_message)
    await fleet.nc.flush()
    session = await _session(fleet, {"text": "one"}, {"text": "two"})
    await session.prompt("first")
    await until_end(session)
    await session.prompt("second")
    await until(session, "agent_start")
    await eventually(lambda: sum(s.endswith(".agent_start") for s in seen) == 2)
    assert not [s for s in seen if ".audit." in s]
