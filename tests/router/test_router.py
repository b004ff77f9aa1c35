"""Router replicas: one leader, a standby that takes over; failover of a dead worker."""

from __future__ import annotations

from typing import Any

from tests.conftest import Harness, eventually


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
