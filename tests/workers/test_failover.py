"""Faults: a worker killed mid-turn, a worker joining under load, a paused stale owner."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from typing import Any

import orjson

from flotilla import Session
from tests.conftest import Harness, WorkerProcess, count_ends, eventually, prompt_rounds

SLOW = {"script": [{"text": "slow reply", "delay_ms": 2500}]}


async def _fleet_of_two_processes(harness_factory: Any, **overrides: Any) -> Harness:
    harness: Harness = await harness_factory(**overrides)
    await harness.start_router()
    harness.spawn_worker("pa")
    harness.spawn_worker("pb")
    await harness.wait_all_shards({"pa", "pb"}, timeout=30)
    return harness


async def _slow_turn(harness: Harness) -> tuple[Session, str, WorkerProcess]:
    """Start a slow turn; returns the session, the prompt id and the worker running it."""
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:script", provider_opts=SLOW)
    prompt_id = await session.prompt("go")
    start = await session.wait_for({"agent_start"}, request_id=prompt_id, timeout=10)
    runner = next(p for p in harness.processes if p.worker_id == start.worker)
    return session, prompt_id, runner


async def test_worker_killed_mid_turn_another_finishes_it(harness_factory: Any) -> None:
    harness = await _fleet_of_two_processes(harness_factory)
    session, prompt_id, victim = await _slow_turn(harness)
    victim.signal(signal.SIGKILL)
    resumed = await session.wait_for({"turn_resumed"}, request_id=prompt_id, timeout=20)
    assert resumed.worker != victim.worker_id
    assert resumed.data == {"turn": 1, "step": 0, "worker": resumed.worker}
    end = await session.wait_for({"agent_end"}, request_id=prompt_id, timeout=20)
    assert end.data["last_message"]["content"] == "slow reply"
    marker = await session.prompt("after")
    ends = []
    while True:
        event = await session.wait_for({"agent_end"}, request_id=None, timeout=10)
        if event.request_id == marker:
            break
        ends.append(event)
    assert ends == []  # no second agent_end for the interrupted turn


async def test_worker_joining_takes_shards_without_loss_or_duplicates(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory()
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    sessions = [await harness.fleet.create_agent(model="mock:echo") for _ in range(12)]
    sent: list[str] = []
    publisher = asyncio.create_task(prompt_rounds(sessions, 40, sent, pause=0.01))
    await asyncio.sleep(0.1)
    await harness.start_worker("w2")
    await publisher
    await harness.wait_all_shards({"w1", "w2"})
    ends: Counter[str] = Counter()
    workers: set[str] = set()

    async def all_ended() -> bool:
        for session in sessions:
            while not session._events.empty():
                event = session._events.get_nowait()
                if event.type == "agent_end" and event.request_id:
                    ends[event.request_id] += 1
                    workers.add(event.worker or "")
        return len(ends) >= len(sent)

    try:
        await eventually(all_ended, timeout=30, what="every prompt to end")
    except AssertionError as exc:
        missing = sorted(set(sent) - set(ends))
        trail = await _events_of(harness, missing[0])
        raise AssertionError(
            f"{exc}: {len(missing)} of {len(sent)} never ended, e.g. {missing[:5]}; "
            f"events of the first: {trail}"
        ) from None
    assert set(ends) == set(sent)
    assert max(ends.values()) == 1
    assert workers == {"w1", "w2"}


async def _events_of(harness: Harness, request_id: str) -> list[tuple[str, str | None]]:
    """(type, worker) of every stored event caused by `request_id` (diagnostics)."""
    assert harness.fleet is not None
    out = []
    async with asyncio.timeout(5):
        async for event in harness.fleet.subscribe(tenant="acme", since=0):
            if event.request_id == request_id:
                out.append((event.type, event.worker))
            last = (
                await harness.nc.jetstream().stream_info(  # type: ignore[union-attr]
                    harness.settings.subjects.evt_stream
                )
            ).state.last_seq
            if event.seq == last:
                break
    return out


async def test_stale_owner_cannot_overwrite_state(harness_factory: Any) -> None:
    # a long grace lets the stale turn reach its write instead of being cancelled on release
    harness = await _fleet_of_two_processes(harness_factory, handover_grace_s=10.0)
    session, prompt_id, stale = await _slow_turn(harness)
    stale.signal(signal.SIGSTOP)
    end = await session.wait_for({"agent_end"}, request_id=prompt_id, timeout=30)
    assert end.worker != stale.worker_id
    key = f"{harness.settings.prefix}:s:{{acme.{session.sid}}}"
    before = await harness.redis.hgetall(key)
    stale.signal(signal.SIGCONT)
    log = harness.tmp / f"{stale.worker_id}.log"
    try:
        await eventually(
            lambda: "fenced" in log.read_text().lower(),
            timeout=15,
            what="the stale owner to be fenced",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its log:\n{log.read_text()[-3000:]}") from None
    after = await harness.redis.hgetall(key)
    assert after == before
    state = orjson.loads(after[b"d"])
    assert state["history_len"] == 2 and state["current"] is None
    assert await harness.redis.llen(f"{harness.settings.prefix}:h:{{acme.{session.sid}}}") == 2


async def test_sigterm_hands_a_running_turn_over_to_another_worker(harness_factory: Any) -> None:
    harness = await _fleet_of_two_processes(harness_factory, handover_grace_s=0.3)
    session, prompt_id, leaving = await _slow_turn(harness)
    leaving.signal(signal.SIGTERM)
    assert await asyncio.to_thread(leaving.process.wait, 15) == 0
    resumed = await session.wait_for({"turn_resumed"}, request_id=prompt_id, timeout=15)
    assert resumed.worker != leaving.worker_id
    end = await session.wait_for({"agent_end"}, request_id=prompt_id, timeout=15)
    assert end.data["last_message"]["content"] == "slow reply"


async def test_a_worker_frozen_after_a_restart_and_woken_later_stalls_nothing(
    harness_factory: Any,
) -> None:
    harness = await _fleet_of_two_processes(harness_factory, shards=8)
    assert harness.fleet is not None
    sessions = [await harness.fleet.create_agent(model="mock:echo") for _ in range(16)]
    sent: list[str] = []
    publisher = asyncio.create_task(prompt_rounds(sessions, 60, sent, pause=0.05))
    harness.processes[0].signal(signal.SIGKILL)
    restarted = harness.spawn_worker("pc")

    async def restarted_owns_shards() -> bool:
        status = await harness.fleet.status()  # type: ignore[union-attr]
        return any(b.worker == "pc" and b.shards for b in status.workers)

    await eventually(restarted_owns_shards, timeout=30, what="the restarted worker to own shards")
    restarted.signal(signal.SIGSTOP)  # frozen just after it took its shards
    await harness.wait_all_shards({"pb"}, timeout=30)  # they moved on without it
    restarted.signal(signal.SIGCONT)
    await publisher
    await harness.wait_all_shards({"pb", "pc"}, timeout=30)
    probes = [await s.prompt("probe") for s in sessions]
    ends: Counter[str] = Counter()

    async def all_ended() -> bool:
        for event in count_ends(sessions, ends):
            seen.setdefault(str(event.request_id), []).append((event.turn, event.worker))
        return set(sent + probes) <= set(ends)

    seen: dict[str, list[tuple[int, str | None]]] = {}
    await eventually(all_ended, timeout=60, what="every prompt and probe to end")
    assert max(ends.values()) == 1, {r: t for r, t in seen.items() if len(t) > 1}
    assert "Consumer Deleted" not in (harness.tmp / "pb.log").read_text()
