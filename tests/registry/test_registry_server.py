"""The router's registry requests: persistence, revisions, redaction, errors, replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest
from prometheus_client import REGISTRY

from flotilla.errors import FlotillaError
from schemas import Budget, ProviderProfile
from tests.conftest import Harness
from tests.registry.conftest import client_of, new_fleet_key, store_of

Factory = Callable[..., Awaitable[Harness]]


async def test_register_get_list_and_unregister_with_consecutive_revisions(
    harness_factory: Factory,
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    client = client_of(harness)
    first = await client.register(
        ProviderProfile(
            name="acme-openai",
            provider="openai",
            opts={"api_key": "sk-1", "base_url": "http://x", "org_token": "t", "timeout_ms": 5},
            tenant="acme",
            budget=Budget(tokens_per_day=1000),
        )
    )
    second = await client.register(ProviderProfile(name="shared", provider="mock"))
    assert second == first + 1
    got = await client.get("acme-openai")
    assert got.opts == {
        "api_key": "***",
        "base_url": "http://x",
        "org_token": "***",
        "timeout_ms": 5,
    }
    assert got.budget == Budget(tokens_per_day=1000)
    assert [p.name for p in await client.list()] == ["acme-openai", "shared"]
    assert [p.name for p in await client.list("acme")] == ["acme-openai"]
    assert await client.unregister("shared") == second + 1
    with pytest.raises(FlotillaError) as missing:
        await client.get("shared")
    assert missing.value.code == "not_found"


async def test_unregistering_an_unknown_profile_is_not_found(harness_factory: Factory) -> None:
    harness = await harness_factory()
    await harness.start_router()
    labels = {"op": "unregister", "outcome": "not_found"}
    before = REGISTRY.get_sample_value("flotilla_router_registry_requests_total", labels) or 0
    with pytest.raises(FlotillaError) as error:
        await client_of(harness).unregister("ghost")
    assert error.value.code == "not_found"
    assert (
        REGISTRY.get_sample_value("flotilla_router_registry_requests_total", labels) == before + 1
    )
    assert await store_of(harness).revision() == 0


async def test_an_invalid_request_is_refused_without_echoing_its_values(
    harness_factory: Factory,
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    assert harness.nc is not None
    subject = harness.settings.subjects.registry("register")
    body = {"name": "bad.name", "provider": "openai", "opts": {"api_key": "sk-LEAK-ME"}}
    reply = orjson.loads((await harness.nc.request(subject, orjson.dumps(body), timeout=5)).data)
    assert reply["ok"] is False and reply["error"] == "invalid_request"
    assert "name" in reply["message"] and "sk-LEAK-ME" not in reply["message"]


async def test_a_profile_cannot_name_the_registry_as_its_provider(harness_factory: Factory) -> None:
    harness = await harness_factory()
    await harness.start_router()
    with pytest.raises(FlotillaError) as error:
        await client_of(harness).register(ProviderProfile(name="loop", provider="registry"))
    assert error.value.code == "invalid_request"


async def test_the_router_seals_secrets_a_client_sent_in_clear(harness_factory: Factory) -> None:
    harness = await harness_factory(fleet_key=new_fleet_key())
    await harness.start_router()
    await client_of(harness, with_key=False).register(
        ProviderProfile(name="p1", provider="mock", opts={"api_key": "sk-plain-9"})
    )
    stored = await store_of(harness).get("p1")
    assert stored is not None
    assert str(stored.opts["api_key"]).startswith("enc:v1:")


async def test_every_router_replica_serves_the_registry_in_one_order(
    harness_factory: Factory,
) -> None:
    harness = await harness_factory()
    first = await harness.start_router()
    await harness.start_router()
    client = client_of(harness)
    revisions = await asyncio.gather(
        *(client.register(ProviderProfile(name=f"p{i}", provider="mock")) for i in range(20))
    )
    assert sorted(revisions) == list(range(1, 21))
    await first.shutdown()
    assert await client.register(ProviderProfile(name="after", provider="mock")) == 21
    assert len(await client.list()) == 21
