"""Every node's copy of the registry: broadcast, gap detection, resync, in-process lookups."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import orjson

from flotilla.registry import ProviderRegistryCopy
from schemas import ProviderProfile, RegistryChange
from tests.conftest import Harness, eventually
from tests.registry.conftest import GatewayCopy, client_of, store_of

Factory = Callable[..., Awaitable[Harness]]
CopyFactory = Callable[..., Awaitable[GatewayCopy]]


async def test_a_change_reaches_every_worker_and_a_gateway_copy(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    workers = [await harness.start_worker(w) for w in ("w1", "w2")]
    gateway = await gateway_copy(harness)
    copies = [w.registry for w in workers] + [gateway.copy]
    assert all(isinstance(c, ProviderRegistryCopy) for c in copies)
    client = client_of(harness)

    revision = await client.register(ProviderProfile(name="p1", provider="mock", opts={"a": 1}))
    await eventually(lambda: all(c.revision == revision for c in copies), what="the broadcast")
    assert all(
        c.lookup("p1") == ProviderProfile(name="p1", provider="mock", opts={"a": 1}) for c in copies
    )

    revision = await client.unregister("p1")
    await eventually(lambda: all(c.revision == revision for c in copies), what="the delete")
    assert all(c.lookup("p1") is None for c in copies)
    assert gateway.reloads == ["start"]  # consecutive revisions: no reload needed


async def test_a_lookup_is_an_in_process_read(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    await client_of(harness).register(ProviderProfile(name="p1", provider="mock"))
    gateway = await gateway_copy(harness)  # loads the existing profile at start
    assert not inspect.iscoroutinefunction(ProviderRegistryCopy.lookup)
    await harness.redis.aclose()  # no Redis ...
    assert harness.nc is not None
    await harness.nc.close()  # ... and no NATS: the copy still answers
    profile = gateway.copy.lookup("p1")
    assert profile is not None and profile.provider == "mock"


async def test_a_revision_gap_reloads_the_whole_set(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    gateway = await gateway_copy(harness, resync_s=3600)
    await store_of(harness).put(ProviderProfile(name="missed", provider="mock"))  # no broadcast
    revision = await client_of(harness).register(ProviderProfile(name="seen", provider="mock"))
    await gateway.copy.wait_for(revision)
    assert gateway.reloads == ["start", "gap"]
    assert set(gateway.copy.profiles) == {"missed", "seen"}


async def test_old_and_duplicate_broadcasts_change_nothing(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    await harness.start_router()
    client = client_of(harness)
    await client.register(ProviderProfile(name="p1", provider="mock"))
    gateway = await gateway_copy(harness, resync_s=3600)
    assert harness.nc is not None
    stale = RegistryChange(op="delete", name="p1", revision=1)
    await harness.nc.publish(
        harness.settings.subjects.registry_changed, stale.model_dump_json().encode()
    )
    await harness.nc.publish(harness.settings.subjects.registry_changed, b"not json")
    revision = await client.register(ProviderProfile(name="p2", provider="mock"))
    await gateway.copy.wait_for(revision)
    assert set(gateway.copy.profiles) == {"p1", "p2"} and gateway.reloads == ["start"]


async def test_a_lost_broadcast_is_caught_up_by_the_periodic_check(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    gateway = await gateway_copy(harness, resync_s=0.05)
    revision, _ = await store_of(harness).put(ProviderProfile(name="quiet", provider="mock"))
    await gateway.copy.wait_for(revision)
    assert gateway.copy.lookup("quiet") is not None
    assert gateway.reloads[-1] == "resync"


async def test_a_stored_profile_that_does_not_parse_is_skipped(
    harness_factory: Factory, gateway_copy: CopyFactory
) -> None:
    harness = await harness_factory()
    await store_of(harness).put(ProviderProfile(name="good", provider="mock"))
    key = f"{harness.settings.redis_prefix}:{{registry}}:profiles"
    await harness.redis.hset(key, "bad", orjson.dumps({"name": "bad"}))  # no provider
    gateway = await gateway_copy(harness)
    assert set(gateway.copy.profiles) == {"good"}
