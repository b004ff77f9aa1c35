"""The recipes 6.3, 10, 11 and 13 of examples/ run against a live fleet."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from examples import audit_sink, support_agent, tenant_profiles, vault_resolver
from flotilla.registry import RegistryClient
from flotilla.runtime import FleetCipher
from schemas import Event, ProviderProfile
from tests.conftest import Harness
from tests.registry.conftest import new_fleet_key
from workers import Worker

Factory = Callable[..., Awaitable[Harness]]


class SyncedRegistry(RegistryClient):
    """A registry client whose changes are applied by every worker before it returns, so a
    prompt right after `register` never races the `registry.changed` broadcast."""

    def __init__(self, harness: Harness) -> None:
        assert harness.nc is not None
        cipher = FleetCipher.from_setting(harness.settings.fleet_key)
        super().__init__(harness.nc, subjects=harness.settings.subjects, cipher=cipher)
        self._harness = harness

    async def register(self, profile: ProviderProfile) -> int:
        return await self._synced(await super().register(profile))

    async def unregister(self, name: str) -> int:
        return await self._synced(await super().unregister(name))

    async def _synced(self, revision: int) -> int:
        for service in self._harness.services:
            if isinstance(service, Worker) and service.registry is not None:
                await service.registry.wait_for(revision)
        return revision


def of_type(events: list[Event], type_: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == type_]


def ends(events: list[Event]) -> list[tuple[str, str, str | None]]:
    """(session, reason, last answer) of each turn's end."""
    return [
        (e.sid, e.data["reason"], (e.data.get("last_message") or {}).get("content"))
        for e in events
        if e.type in ("agent_end", "agent_abort")
    ]


# -- 6.3 multi-tenant provider profiles --------------------------------------------------------
async def test_each_tenant_session_answers_from_its_own_profile(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await tenant_profiles.main(fleet.fleet, registry=SyncedRegistry(fleet))
    turns = ends(events)
    assert [(sid.split("-")[0], reason, text) for sid, reason, text in turns] == [
        ("acme", "finished", tenant_profiles.ANSWERS["acme"]),
        ("globex", "finished", tenant_profiles.ANSWERS["globex"]),
        ("initech", "error", None),
        ("initech", "finished", tenant_profiles.ANSWERS["initech"]),
    ]
    (error,) = of_type(events, "error")
    assert (error["code"], error["profile"]) == ("registry_profile_missing", "initech-mock")
    assert turns[2][0] == turns[3][0]  # the same session, alive after the error


# -- 11 audit records into a database ----------------------------------------------------------
async def test_the_turn_the_approval_and_the_checkpoint_become_rows(fleet: Harness) -> None:
    assert fleet.fleet is not None
    db = sqlite3.connect(":memory:")
    events = await audit_sink.main(fleet.fleet, db=db)
    sid = events[0].sid
    (asked,) = of_type(events, "approval_required")
    (saved,) = of_type(events, "checkpoint_saved")
    rows = audit_sink.read_rows(db)
    found = {
        (r["action"], r["actor_type"], r["actor_id"], r["target_type"], r["target_id"])
        for r in rows
    }
    assert found >= {
        ("agent.turn.start", "agent", sid, "agent_session", sid),
        ("approval.requested", "agent", sid, "approval", asked["approval_id"]),
        ("approval.resolved", "user", None, "approval", asked["approval_id"]),
        ("agent.turn.stop", "agent", sid, "agent_session", sid),
        ("checkpoint.save", "user", None, "checkpoint", saved["checkpoint_id"]),
        ("agent.model.switch", "user", None, "agent_session", sid),
    }
    (switch,) = [r for r in rows if r["action"] == "agent.model.switch"]
    assert json.loads(switch["after"]) == {
        "model": "mock:echo",
        "provider_opts": {"api_key": "***"},
    }
    dump = "\n".join(db.iterdump())
    assert sid in dump and audit_sink.API_KEY not in dump


# -- 13 encrypted keys opened by a node-local resolver hook ------------------------------------
@pytest.fixture
async def vault_fleet(harness_factory: Factory) -> Harness:
    """A fleet whose worker opens `encrypted_key` opts with the example's hook."""
    harness = await harness_factory(
        fleet_key=new_fleet_key(), registry_resolver="examples.vault_resolver:resolve_opts"
    )
    return await harness.start_fleet("w1")


async def test_the_hook_decrypts_the_key_once_per_ttl_and_a_bad_one_fails_the_turn(
    vault_fleet: Harness,
) -> None:
    assert vault_fleet.fleet is not None
    vault_resolver.OPENED.clear()
    events = await vault_resolver.main(vault_fleet.fleet, registry=SyncedRegistry(vault_fleet))
    turns = [(reason, text) for _, reason, text in ends(events)]
    assert turns == [
        ("finished", vault_resolver.ANSWERS[0]),
        ("finished", vault_resolver.ANSWERS[1]),
        ("error", None),
        ("finished", vault_resolver.RECOVERED),
    ]
    (error,) = of_type(events, "error")
    assert (error["code"], error["profile"]) == ("registry_resolver_failed", "tenant-vault-down")
    assert vault_resolver.OPENED == ["tenant-7", "tenant-vault-down"]  # tenant-7: cached
    assert vault_resolver.TENANT_KEY not in str([e.data for e in events])


# -- 10 the support agent template -------------------------------------------------------------
async def test_the_support_agent_routes_loads_the_kb_and_waits_for_the_refund_approval(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    events = await support_agent.main(fleet.fleet)
    plugin_events = of_type(events, "plugin_event")
    (loaded,) = [e["payload"] for e in plugin_events if e["kind"] == "memory_loaded"]
    assert loaded["files"] == ["KB.md"]
    assert not [e for e in plugin_events if e["kind"] == "content_policy_error"]  # judged: ALLOW
    (switched,) = of_type(events, "model_switched")
    assert (switched["from"], switched["to"], switched["reason"]) == (
        support_agent.BIG_MODEL,
        support_agent.SMALL_MODEL,
        "plugin",
    )
    (asked,) = of_type(events, "approval_required")
    (resolved,) = of_type(events, "approval_resolved")
    assert asked["args"]["path"] == "refunds/ORD-1042.json"
    assert (resolved["approval_id"], resolved["status"]) == (asked["approval_id"], "approved")
    read, write = of_type(events, "tool_execution_end")
    assert (read["name"], read["status"], write["name"], write["status"]) == (
        "read_file",
        "ok",
        "write_file",
        "ok",
    )
    assert "Refunds: orders under $100" in read["result"]
    assert events[-1].type == "agent_end" and events[-1].data["reason"] == "finished"
    assert events[-1].data["last_message"]["content"] == support_agent.ANSWER


async def test_the_support_agent_keeps_a_pro_customer_on_the_big_model(fleet: Harness) -> None:
    assert fleet.fleet is not None
    events = await support_agent.main(fleet.fleet, user_tier="pro")
    assert not of_type(events, "model_switched") and not of_type(events, "approval_required")
    assert events[-1].data["last_message"]["content"].startswith("echo: I want a refund")
