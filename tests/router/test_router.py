"""Router replicas: one leader, a standby that takes over; failover of a dead worker."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest
from nats.js.kv import KeyValue

from tests.conftest import Harness, eventually
from tests.registry.conftest import client_of


async def test_standby_router_takes_over_when_the_leader_stops(harness_factory: Any) -> None:
    harness: Harness = await harness_factory()
    first = await harness.start_router()
    await eventually(lambda: first.is_leader, what="a leader")
    second = await harness.start_router()
    await harness.start_worker("w1")
    await harness.wait_all_shards({"w1"})
    assert not second.is_leader
    await first.shutdown()
    await eventually(lambda: second.is_leader, timeout=10, what="the standby to lead")
    await harness.start_worker("w2")
    await harness.wait_all_shards({"w1", "w2"})


async def test_shards_of_a_stopped_worker_move_to_the_others(harness_factory: Any) -> None:
    harness: Harness = await harness_factory()
    await harness.start_router()
    await harness.start_worker("w1")
    w2 = await harness.start_worker("w2")
    await harness.wait_all_shards({"w1", "w2"})
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    await w2.shutdown()
    await harness.wait_all_shards({"w1"})
    await session.prompt("still here")
    assert await session.collect_reply(timeout=10) == "echo: still here"


async def test_a_watch_that_fails_is_made_again(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first watch of each of the fleet's buckets fails (as a JetStream request may
    under load or in an election): the router still follows the workers and serves the
    provider registry, and the worker still follows the placement. A router whose watch
    failed used to stop, taking the registry with it."""
    harness: Harness = await harness_factory()
    subjects = harness.settings.subjects
    buckets = {subjects.workers_bucket, subjects.placement_bucket}
    failed: list[str] = []
    watchall = KeyValue.watchall

    async def flaky(self: KeyValue, **kwargs: Any) -> Any:
        name = self._name  # the bucket
        if not kwargs and name in buckets and name not in failed:  # keys() passes options
            failed.append(name)
            raise nats.errors.TimeoutError
        return await watchall(self, **kwargs)

    monkeypatch.setattr(KeyValue, "watchall", flaky)
    await harness.start_fleet("w1")
    assert sorted(failed) == sorted(buckets)
    assert await client_of(harness).list() == []
