"""`registry:<profile>:<model>` sessions: resolution at each LLM request, errors, budgets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from flotilla import Fleet, Session
from flotilla.registry import RegistryClient
from flotilla.runtime import FleetCipher
from schemas import Budget, ProviderProfile
from tests.conftest import Harness
from tests.engine_helpers import of_type, until_end
from tests.registry import resolver_hooks
from tests.registry.conftest import client_of, new_fleet_key
from workers import Worker

Factory = Callable[..., Awaitable[Harness]]


async def _register(harness: Harness, profile: ProviderProfile, **client: Any) -> None:
    """Register through the router and wait until every worker's copy has the change."""
    revision = await client_of(harness, **client).register(profile)
    for service in harness.services:
        if isinstance(service, Worker) and service.registry is not None:
            await service.registry.wait_for(revision)


async def _turn(session: Session, text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `error` events of one turn and its `agent_end` data."""
    await session.prompt(text)
    events = await until_end(session)
    assert events[-1].type == "agent_end"
    return of_type(events, "error"), events[-1].data


def _script(text: str, **usage: int) -> dict[str, Any]:
    """A script that answers `text` with `usage` at every step of a test."""
    return {"script": [{"text": text, "usage": usage}] * 3}


async def test_a_registry_model_runs_on_the_profiles_provider_and_opts(fleet: Harness) -> None:
    assert fleet.fleet is not None
    await _register(fleet, ProviderProfile(name="p1", provider="mock", opts=_script("scripted")))
    echo = await fleet.fleet.create_agent(model="registry:p1:echo")
    await echo.prompt("hello")
    assert await echo.collect_reply() == "echo: hello"
    scripted = await fleet.fleet.create_agent(model="registry:p1:script")
    await scripted.prompt("go")
    assert await scripted.collect_reply() == "scripted"


async def test_a_registry_script_moves_on_step_by_step(fleet: Harness) -> None:
    assert fleet.fleet is not None
    steps = [{"text": "first"}, {"error": "rate_limit"}, {"text": "third"}]
    await _register(fleet, ProviderProfile(name="p3", provider="mock", opts={"script": steps}))
    session = await fleet.fleet.create_agent(model="registry:p3:script")
    await session.prompt("one")
    assert await session.collect_reply() == "first"
    await session.prompt("two")  # the scripted error is retried with the next step
    assert await session.collect_reply() == "third"
    assert (await fleet.state(session.sid))["script_cursor"] == 3


def _lookups(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("flotilla_worker_registry_lookups_total", {"outcome": outcome})
        or 0.0
    )


async def test_a_missing_profile_ends_the_turn_and_the_session_works_on(fleet: Harness) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="registry:later:echo")
    missing = _lookups("missing")
    errors, end = await _turn(session, "too early")
    assert errors[0]["code"] == "registry_profile_missing" and errors[0]["profile"] == "later"
    assert _lookups("missing") == missing + 1
    assert end["reason"] == "error" and end["error"]["code"] == "registry_profile_missing"
    await _register(fleet, ProviderProfile(name="later", provider="mock"))
    errors, end = await _turn(session, "now")
    assert not errors and end["reason"] == "finished"
    assert end["last_message"]["content"] == "echo: now"


async def test_a_profile_of_another_tenant_is_missing(fleet: Harness) -> None:
    assert fleet.fleet is not None  # the fleet's sessions are tenant acme's
    await _register(fleet, ProviderProfile(name="theirs", provider="mock", tenant="beta"))
    await _register(fleet, ProviderProfile(name="ours", provider="mock", tenant="acme"))
    theirs = await fleet.fleet.create_agent(model="registry:theirs:echo")
    errors, _ = await _turn(theirs, "hi")
    assert errors[0]["code"] == "registry_profile_missing"
    ours = await fleet.fleet.create_agent(model="registry:ours:echo")
    assert not (await _turn(ours, "hi"))[0]


async def test_a_key_sealed_with_another_fleet_key_fails_the_resolver(
    harness_factory: Factory,
) -> None:
    harness = await (await harness_factory(fleet_key=new_fleet_key())).start_fleet("w1")
    assert harness.fleet is not None and harness.nc is not None
    foreign = RegistryClient(
        harness.nc,
        subjects=harness.settings.subjects,
        cipher=FleetCipher.from_setting(new_fleet_key()),
    )
    revision = await foreign.register(
        ProviderProfile(name="p1", provider="mock", opts={"api_key": "sk-foreign"})
    )
    worker = harness.services[-1]
    assert isinstance(worker, Worker) and worker.registry is not None
    await worker.registry.wait_for(revision)
    session = await harness.fleet.create_agent(model="registry:p1:echo")
    errors, end = await _turn(session, "hi")
    assert errors[0]["code"] == "registry_resolver_failed" and errors[0]["profile"] == "p1"
    assert end["reason"] == "error"
    await _register(harness, ProviderProfile(name="p1", provider="mock", opts={"api_key": "k"}))
    assert not (await _turn(session, "again"))[0]


async def test_the_resolver_hook_runs_once_per_ttl(harness_factory: Factory) -> None:
    harness = await (
        await harness_factory(registry_resolver="tests.registry.resolver_hooks:from_vault")
    ).start_fleet("w1")
    assert harness.fleet is not None
    resolver_hooks.CALLS.clear()
    await _register(
        harness, ProviderProfile(name="v", provider="mock", opts={"vault_ref": "ref-1"})
    )
    session = await harness.fleet.create_agent(model="registry:v:script")
    for text in ("one", "two"):
        await session.prompt(text)
        assert await session.collect_reply() == "the vault's answer"
    assert resolver_hooks.CALLS == ["ref-1"]


async def test_a_failing_resolver_hook_does_not_leak_its_message(harness_factory: Factory) -> None:
    harness = await (
        await harness_factory(registry_resolver="tests.registry.resolver_hooks:unreachable")
    ).start_fleet("w1")
    assert harness.fleet is not None
    await _register(
        harness, ProviderProfile(name="v", provider="mock", opts={"api_key": "sk-IN-HOOK"})
    )
    session = await harness.fleet.create_agent(model="registry:v:echo")
    errors, end = await _turn(session, "hi")
    assert errors[0]["code"] == "registry_resolver_failed"
    assert "sk-IN-HOOK" not in str(errors) + str(end)


@pytest.mark.parametrize(
    ("budget", "opts"),
    [
        (Budget(tokens_per_day=10), _script("ok", prompt_tokens=8, completion_tokens=4)),
        (
            Budget(usd_per_day=0.5),
            {**_script("ok", prompt_tokens=8), "price": {"input_per_mtok": 100_000.0}},
        ),
    ],
    ids=["tokens", "usd"],
)
async def test_a_spent_daily_budget_fails_the_request_for_that_tenant_only(
    fleet: Harness, budget: Budget, opts: dict[str, Any]
) -> None:
    assert fleet.fleet is not None
    await _register(fleet, ProviderProfile(name="b", provider="mock", opts=opts, budget=budget))
    session = await fleet.fleet.create_agent(model="registry:b:script")
    assert not (await _turn(session, "first"))[0]  # under the limit before: allowed
    errors, end = await _turn(session, "second")
    assert errors[0]["code"] == "budget_exceeded" and errors[0]["profile"] == "b"
    assert end["reason"] == "error"
    async with Fleet(
        fleet.nc, subjects=fleet.settings.subjects, tenant="beta", owns_nc=False
    ) as beta:  # type: ignore[arg-type]
        other = await beta.create_agent(model="registry:b:script")
        assert not (await _turn(other, "mine"))[0]


async def test_usage_is_counted_per_tenant_profile_and_day(fleet: Harness) -> None:
    assert fleet.fleet is not None
    opts = {**_script("ok", prompt_tokens=8, completion_tokens=4), "price": {"input_per_mtok": 1e5}}
    profile = ProviderProfile(name="b", provider="mock", opts=opts, budget=Budget(usd_per_day=9.0))
    await _register(fleet, profile)
    session = await fleet.fleet.create_agent(model="registry:b:script")
    for text in ("one", "two"):
        assert not (await _turn(session, text))[0]
    keys = [k async for k in fleet.redis.scan_iter(f"{fleet.settings.redis_prefix}:budget:*")]
    assert len(keys) == 1 and b"{acme}:b:" in keys[0]
    counters = await fleet.redis.hgetall(keys[0])
    assert int(counters[b"tokens"]) == 24 and float(counters[b"usd"]) == pytest.approx(1.6)
    assert 0 < await fleet.redis.ttl(keys[0]) <= 2 * 24 * 3600
