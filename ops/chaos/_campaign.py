"""The campaign: start a private fleet, put it under steady load, inject every fault kind
while the load runs, then drain, probe every session and read every session's state."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client as NATS

from flotilla import Fleet
from flotilla.keys import RedisKeys
from flotilla.runtime import connect_redis, wait_for_jetstream
from ops.chaos._faults import FaultInjector
from ops.chaos._fleet import ChaosFleet
from ops.chaos._load import TENANT, LoadClient, PublishFailed
from ops.chaos._verdict import Turn, by_phase, judge, render, report, slowest, worst_waits

BUSY = ("running", "streaming", "executing_tools")
"""Session states that mean a turn is under way: none may remain once every turn ended."""


@dataclass(frozen=True, kw_only=True)
class CampaignOptions:
    redis: str
    sessions: int
    prompts: int
    before_s: float
    after_s: float
    expected_faults_s: float
    pause_s: float
    kills: int | None
    drain_s: float
    seed: int


class Campaign:
    """One run; `log` prints progress with the time since the start."""

    def __init__(self, options: CampaignOptions) -> None:
        self.options = options
        self.started = time.monotonic()
        self.rng = random.Random(options.seed)
        self.turns: list[Turn] = []
        self.unpublished: list[str] = []
        self.load_done = asyncio.Event()
        self.sent: dict[str, int] = {}

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    async def run(self) -> dict[str, Any]:
        self.log(f"starting the fleet: 3 NATS nodes (R3), Redis {self.options.redis}, ...")
        fleet = await asyncio.to_thread(ChaosFleet.start, redis_mode=self.options.redis)
        self.log(f"data and logs in {fleet.data_dir}")
        try:
            nc = await nats.connect(
                fleet.settings.nats_url.split(","),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                pending_size=64 * 1024 * 1024,
                error_cb=self._nats_error,
            )
            try:
                return await self._run(fleet, nc)
            finally:
                await nc.close()
        finally:
            self.log("stopping the fleet")
            await asyncio.to_thread(fleet.stop)

    async def _nats_error(self, exc: Exception) -> None:
        self.log(f"client: nats {exc!r} (reconnecting)")

    async def _run(self, fleet: ChaosFleet, nc: NATS) -> dict[str, Any]:
        options = self.options
        settings = fleet.settings
        await wait_for_jetstream(nc.jetstream(), timeout=60)
        status = Fleet(nc, subjects=settings.subjects, tenant=TENANT, owns_nc=False)
        await self._wait_ready(status, fleet)
        client = LoadClient(nc, settings.subjects, publish_budget_s=60.0)
        await client.start()
        sids = [f"s{i:04d}" for i in range(options.sessions)]
        await self._create(client, sids)
        injector = FaultInjector(fleet, nc.jetstream(), status, log=self.log, rng=self.rng)
        gap = (options.before_s + options.expected_faults_s + options.after_s) / options.prompts
        self.log(f"load: {len(sids)} sessions, one prompt each per {gap:.1f} s")
        async with asyncio.TaskGroup() as group:
            for sid in sids:
                group.create_task(self._session_load(client, sid, gap))
            await asyncio.sleep(options.before_s)
            faults_start = time.monotonic()
            self.log("faults begin")
            faults_end = await self._faults(injector)
            self.log(f"faults end; {options.after_s:g} s of load after them")
            await asyncio.sleep(options.after_s)
            self.load_done.set()
        self.log(f"load done: {len(self.turns)} prompts acknowledged; draining")
        recovered = await client.recover_from_stream()  # so the drain waits only for the rest
        await self._drain(client)
        recovered += await client.recover_from_stream()
        self.log(f"{recovered} terminal events read from the stream (missed live by this client)")
        probes = await self._probe(client, sids)
        verdict = judge(self.turns + probes, client.ends)
        probe_ids = {p.command_id for p in probes}
        verdict.stuck = [cid for cid in verdict.lost if cid in probe_ids]
        verdict.lost = [cid for cid in verdict.lost if cid not in probe_ids]
        verdict.lost += [f"create:{sid}" for sid in sids if sid not in client.created]
        verdict.unpublished = self.unpublished
        verdict.stranded = await self._stranded(fleet, sids)
        data = report(
            verdict,
            phases=by_phase(self.turns, client.ends, faults_start, faults_end),
            faults=worst_waits(self.turns, client.ends, injector.windows),
            params={**asdict(options), "gap_s": round(gap, 2), "data_dir": str(fleet.data_dir)},
            wall_s=time.monotonic() - self.started,
        )
        data["slowest"] = slowest(self.turns, client.ends, origin=self.started)
        data["lost_turns"] = [
            {
                "command_id": t.command_id,
                "sid": t.sid,
                "index": t.index,
                "published_s": round(t.published_at - self.started, 1),
            }
            for t in self.turns
            if not client.ends.get(t.command_id)
        ]
        data["client"] = {
            "event_copies_dropped": client.copies,
            "missed_live_read_from_stream": client.missed_live,
            "turns_resumed": client.resumed,
            "publish_retries": client.publish_retries,
            "longest_publish_ms": client.longest_publish_ms,
            "error_events": len(client.errors),
            "first_errors": client.errors[:5],
        }
        return data

    async def _wait_ready(self, status: Fleet, fleet: ChaosFleet) -> None:
        self.log("waiting for 3 workers to own every shard and a router to lead")
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(nats.errors.Error):  # a new cluster still electing
                current = await status.status()
                owned = sum(len(w.shards) for w in current.workers)
                if len(current.workers) == 3 and owned == fleet.settings.shards and current.leader:
                    self.log(f"fleet ready (router leader {current.leader})")
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet did not come up; logs in {fleet.data_dir}")
            await asyncio.sleep(0.3)

    async def _create(self, client: LoadClient, sids: list[str]) -> None:
        self.log(f"creating {len(sids)} sessions (mock:echo)")
        ids = {
            sid: (await client.publish(sid, "create", {"model": "mock:echo"}))[0] for sid in sids
        }
        async with asyncio.TaskGroup() as group:
            for sid, command_id in ids.items():
                group.create_task(client.wait_event(command_id, 60.0, sid=sid))
        self.log(f"{len(client.created)}/{len(sids)} sessions created")

    async def _session_load(self, client: LoadClient, sid: str, gap: float) -> None:
        """One prompt per `gap` (first at a random offset) until the load is done; each
        publish waits for the previous one's ack, so the stream holds them in order."""
        await asyncio.sleep(self.rng.uniform(0, gap))
        index = 0
        while not self.load_done.is_set():
            text = f"{sid}-{index}"
            try:
                self.turns.append(await client.prompt(sid, index, text))
            except PublishFailed as exc:
                self.unpublished.append(str(exc))
            index += 1
            self.sent[sid] = index
            try:
                async with asyncio.timeout(gap):
                    await self.load_done.wait()
            except TimeoutError:
                pass

    async def _faults(self, injector: FaultInjector) -> float:
        """Every fault kind once, `pause_s` apart, while a worker is SIGKILLed every 5-8 s;
        returns when the last window closes."""
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(injector.worker_kill_loop(done, limit=self.options.kills))
            for fault in (
                injector.worker_stop,
                injector.worker_stop_after_restart,
                injector.router_leader_kill,
                injector.nats_cmd_leader_kill,
                injector.redis_master_kill,
                injector.redis_outage,
            ):
                await asyncio.sleep(self.options.pause_s)
                await fault()
            done.set()
        await asyncio.sleep(injector.settle_s)
        return max(w.end for w in injector.windows)

    async def _drain(self, client: LoadClient) -> None:
        deadline = time.monotonic() + self.options.drain_s
        while True:
            open_ = [t for t in self.turns if not client.ends.get(t.command_id)]
            if not open_ or time.monotonic() > deadline:
                self.log(f"drained: {len(open_)} prompts without an end")
                return
            self.log(f"waiting for {len(open_)} prompts to end")
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())) or 0.1)

    async def _probe(self, client: LoadClient, sids: list[str]) -> list[Turn]:
        """A last prompt to every session; each must answer."""
        self.log(f"probing {len(sids)} sessions")
        probes = []
        for sid in sids:
            index = self.sent.get(sid, 0)
            try:
                probes.append(await client.prompt(sid, index, f"{sid}-probe"))
            except PublishFailed as exc:
                self.unpublished.append(str(exc))
        async with asyncio.TaskGroup() as group:
            for probe in probes:
                group.create_task(client.wait_event(probe.command_id, 30.0))
        answered = sum(bool(client.ends.get(p.command_id)) for p in probes)
        self.log(f"{answered}/{len(probes)} sessions answered the probe")
        return probes

    async def _stranded(self, fleet: ChaosFleet, sids: list[str]) -> list[str]:
        """Sessions whose stored state still says a turn is under way."""
        keys = RedisKeys(fleet.settings.redis_prefix)
        redis = connect_redis(fleet.settings)
        stranded = []
        try:
            for sid in sids:
                raw = await redis.hget(keys.state(TENANT, sid), "d")
                state = orjson.loads(raw) if raw else {}
                if state.get("status") in BUSY:
                    stranded.append(f"{sid}:{state['status']}")
        finally:
            await redis.aclose()
        self.log(f"{len(stranded)} sessions left in a busy state")
        return stranded


def log_evidence(data_dir: Path, sids: set[str], *, limit: int = 40) -> list[str]:
    """The components' log lines (warnings and worse) naming sessions that lost a turn, and
    the Sentinels' failovers: what CI prints when a campaign fails, the fleet gone."""
    if not sids:
        return []
    named = re.compile(r"\b(" + "|".join(re.escape(sid) for sid in sids) + r")\b")
    logged = []  # (time stamp, line): the components' lines start with their time
    for log in sorted(data_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if " INFO " not in line and named.search(line):
                logged.append((line[:23], f"{log.stem}: {line}"))
    lines = [line for _, line in sorted(logged, key=lambda entry: entry[0])]
    for log in sorted(data_dir.glob("redis/sentinel-1/sentinel.log")):
        lines += [
            f"sentinel: {line}"
            for line in log.read_text(errors="replace").splitlines()
            if "+switch-master" in line or "+promoted-slave" in line or "failover-abort" in line
        ]
    return lines[-limit:]


async def run_campaign(options: CampaignOptions) -> dict[str, Any]:
    """Run one campaign and print its tables (and, when it failed, the log lines that tell
    why); the report."""
    data = await Campaign(options).run()
    print(render(data))
    if not data["clean"]:
        troubled = {t["sid"] for t in data["lost_turns"]}
        troubled |= {s.split(":")[0] for s in data["evidence"].get("stranded", [])}
        for line in log_evidence(Path(data["params"]["data_dir"]), troubled):
            print(f"  log: {line}")
    return data
