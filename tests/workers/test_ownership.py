"""Shard ownership only moves forward (PROTOCOL §6.5, §6.9): an intake never deletes a newer
owner's consumer, an intake whose consumer vanished re-takes the shard or lets it go (never
loops), `released` markers never go back, `stop()` wakes an intake in back-off, and the
router never has a successor wait for a silent previous owner."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import orjson
import pytest

from flotilla.placement import RELEASED_KEY, SHARD_KEY, Assignment, Heartbeat
from flotilla.runtime import ensure_bucket, provision
from tests.conftest import Harness, eventually
from workers import _intake as intake_module
from workers._delivery import Delivery
from workers._handover import PreviousOwner
from workers._intake import ShardIntake, consumer_name
from workers._slots import SlotPool
from workers._worker import Worker
from workers.errors import Superseded


def _intake(
    harness: Harness,
    epoch: int,
    *,
    received: list[Delivery] | None = None,
    mine: bool = True,
    lost: list[tuple[int, int]] | None = None,
) -> ShardIntake:
    assert harness.nc is not None

    async def still_mine(shard: int, at: int) -> bool:
        return mine

    return ShardIntake(
        nc=harness.nc,
        js=harness.nc.jetstream(),
        settings=harness.settings,
        shard=0,
        epoch=epoch,
        slots=SlotPool(16),
        dispatch=(received if received is not None else []).append,
        share=lambda: 8,
        still_mine=still_mine,
        lost=lambda shard, at: (lost if lost is not None else []).append((shard, at)),
    )


async def _provisioned(harness_factory: Any) -> Harness:
    harness: Harness = await harness_factory(shards=1)
    assert harness.nc is not None
    await provision(harness.nc.jetstream(), harness.settings)
    return harness


async def _consumers(harness: Harness) -> set[str]:
    assert harness.nc is not None
    infos = await harness.nc.jetstream().consumers_info(harness.settings.subjects.cmd_stream)
    return {str(info.name) for info in infos}


async def test_a_stale_intake_never_deletes_a_newer_owners_consumer(
    harness_factory: Any,
) -> None:
    harness = await _provisioned(harness_factory)
    await _intake(harness, 6).prepare()
    with pytest.raises(Superseded, match="newer than epoch 5"):
        await _intake(harness, 5).prepare()
    assert await _consumers(harness) == {consumer_name(0, 6)}


async def test_a_newer_intake_replaces_the_older_consumers(harness_factory: Any) -> None:
    harness = await _provisioned(harness_factory)
    await _intake(harness, 2).prepare()
    await _intake(harness, 3).prepare()
    assert await _consumers(harness) == {consumer_name(0, 3)}


async def test_an_intake_deleted_by_a_newer_owner_lets_the_shard_go(harness_factory: Any) -> None:
    harness = await _provisioned(harness_factory)
    lost: list[tuple[int, int]] = []
    old = _intake(harness, 1, mine=False, lost=lost)
    await old.prepare()
    running = asyncio.create_task(old.run())
    await _intake(harness, 2).prepare()  # the new owner deletes epoch 1's consumer
    await eventually(lambda: lost == [(0, 1)], timeout=20, what="the old intake to let go")
    await asyncio.wait_for(running, 10)  # it stopped instead of pulling forever
    assert await _consumers(harness) == {consumer_name(0, 2)}


async def test_an_owner_whose_consumer_vanished_makes_it_again_and_loses_nothing(
    harness_factory: Any,
) -> None:
    harness = await _provisioned(harness_factory)
    assert harness.nc is not None and harness.fleet is not None
    js = harness.nc.jetstream()
    received: list[Delivery] = []
    lost: list[tuple[int, int]] = []
    intake = _intake(harness, 4, received=received, lost=lost)
    await intake.prepare()
    running = asyncio.create_task(intake.run())
    try:
        await js.delete_consumer(harness.settings.subjects.cmd_stream, consumer_name(0, 4))
        await harness.publish_raw(
            harness.settings.subjects.cmd("acme", "s1", "prompt"),
            orjson.dumps({"op": "prompt", "id": "p1", "text": "hi"}),
        )
        await eventually(lambda: len(received) == 1, timeout=20, what="the command to arrive")
        assert lost == []
        assert await _consumers(harness) == {consumer_name(0, 4)}
    finally:
        await intake.stop()
        await running


async def test_stop_wakes_an_intake_in_back_off(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "ERROR_BACKOFF_S", 3600.0)
    harness = await _provisioned(harness_factory)
    assert harness.nc is not None
    intake = _intake(harness, 1)
    await intake.prepare()
    running = asyncio.create_task(intake.run())
    await harness.nc.jetstream().delete_consumer(
        harness.settings.subjects.cmd_stream, consumer_name(0, 1)
    )
    await eventually(lambda: intake._backoff_until > 0, timeout=20, what="a failed pull")
    await intake.stop()
    await asyncio.wait_for(running, 10)  # not an hour


async def test_a_release_marker_never_goes_back(fleet: Harness) -> None:
    worker = next(s for s in fleet.services if isinstance(s, Worker))
    kv = await fleet.nc.jetstream().key_value(  # type: ignore[union-attr]
        fleet.settings.subjects.placement_bucket
    )
    key = f"{RELEASED_KEY}3"
    await kv.put(key, orjson.dumps({"epoch": 7, "worker": "other"}))
    await worker._mark_released(3, 5)  # a stale owner announcing late
    assert orjson.loads((await kv.get(key)).value)["epoch"] == 7
    await worker._mark_released(3, 9)
    assert orjson.loads((await kv.get(key)).value) == {"epoch": 9, "worker": "w1"}


async def test_a_killed_worker_is_not_waited_for_when_its_shards_move(
    harness_factory: Any,
) -> None:
    # a long timeout keeps the killed worker "live" while the newcomer takes its share
    harness: Harness = await harness_factory(shards=6, worker_timeout_s=8.0)
    assert harness.nc is not None
    await harness.start_router()
    first = harness.spawn_worker("pa")
    harness.spawn_worker("pb")
    await harness.wait_all_shards({"pa", "pb"}, timeout=30)

    async def balanced() -> bool:  # no move of pa's (alive) shards is still to come
        assert harness.fleet is not None
        status = await harness.fleet.status()
        owned = [a.worker for a in status.shards.values()]
        return owned.count("pa") == owned.count("pb") == 3

    await eventually(balanced, timeout=30, what="three shards each")
    kv = await harness.nc.jetstream().key_value(harness.settings.subjects.placement_bucket)
    moves: list[Assignment] = []
    watcher = await kv.watch(f"{SHARD_KEY}*", include_history=False)
    before: dict[int, int] = {}  # each shard's epoch when the watch began (pa still alive)

    async def collect() -> None:
        async for entry in watcher:
            if entry is not None and entry.value:
                move = Assignment.decode(int(entry.key.split(".")[1]), entry.value)
                if move.shard not in before:
                    before[move.shard] = move.epoch
                else:
                    moves.append(move)

    collecting = asyncio.create_task(collect())
    try:
        first.signal(signal.SIGKILL)
        await asyncio.sleep(1.0)  # silent for 5 heartbeats, yet within the worker timeout
        harness.spawn_worker("pc")
        await harness.wait_all_shards({"pb", "pc"}, timeout=40)
    finally:
        collecting.cancel()
        await watcher.stop()  # type: ignore[no-untyped-call]
    taken_from_a = [m for m in moves if m.worker == "pc" and m.epoch > 1]
    assert taken_from_a, moves
    assert all(m.prev != "pa" for m in moves), moves
    log = (harness.tmp / "pc.log").read_text()
    assert "did not release" not in log


async def test_a_successor_stops_waiting_for_an_owner_that_will_not_release(
    harness_factory: Any,
) -> None:
    """The handover wait ends at once when the previous owner's heartbeat shows it will not
    release: gone, silent (killed or frozen), or written by a process that does not hold the
    shard (the one that did was killed and the worker restarted under the same id)."""
    harness: Harness = await harness_factory(heartbeat_interval_s=0.1)
    assert harness.nc is not None
    kv = await ensure_bucket(harness.nc.jetstream(), harness.settings.subjects.workers_bucket)

    async def beat(started: int, shards: tuple[int, ...], moving: tuple[int, ...] = ()) -> None:
        await kv.put("pa", Heartbeat("pa", started, 0, 1, 0, shards, None, False, moving).encode())

    await beat(1, (3,))
    holder = PreviousOwner(kv, "pa", 3, 0.1)
    assert await holder.gone() == ""
    await beat(1, (), moving=(3,))  # letting it go: the successor waits for its marker
    assert await holder.gone() == ""
    await beat(2, ())  # a new process under the same id: it never held shard 3
    assert await holder.gone() == "not_holding"

    await beat(1, (3,))
    frozen = PreviousOwner(kv, "pa", 3, 0.1)
    assert await frozen.gone() == ""
    await asyncio.sleep(0.4)  # no heartbeat for four intervals
    assert await frozen.gone() == "silent"

    await kv.delete("pa")
    assert await PreviousOwner(kv, "pa", 3, 0.1).gone() == "stopped"
