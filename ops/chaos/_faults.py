"""Fault injectors: each hits the running fleet once, repairs what it broke, and returns
the window from injection to repair plus a settle time (turns published while the fleet
fails over still wait on the fault)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js import JetStreamContext

from flotilla import Fleet
from flotilla.errors import UnavailableError
from ops.chaos._fleet import ChaosFleet, Component
from ops.chaos._verdict import FaultWindow


class FaultInjector:
    """The faults of PROTOCOL §6 a production fleet meets, one call each."""

    def __init__(
        self,
        fleet: ChaosFleet,
        js: JetStreamContext,
        status: Fleet,
        *,
        log: Callable[[str], None],
        rng: random.Random,
    ) -> None:
        self.fleet = fleet
        self.js = js
        self.status = status
        self.log = log
        self.rng = rng
        self.settle_s = fleet.settings.worker_timeout_s
        self.windows: list[FaultWindow] = []
        self._stopped: set[str] = set()

    def _window(self, kind: str, start: float, detail: str) -> FaultWindow:
        window = FaultWindow(kind, start, time.monotonic() + self.settle_s, detail)
        self.windows.append(window)
        self.log(f"{kind}: {detail}")
        return window

    def _pick_worker(self) -> Component:
        live = [w for w in self.fleet.workers if w.name not in self._stopped]
        return self.rng.choice(live)

    async def _until(self, check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await check():
                return True
            await asyncio.sleep(0.2)
        return False

    async def _owned_shards(self, worker: str) -> int:
        status = await self.status.status()
        return sum(a.worker == worker for a in status.shards.values())

    async def worker_kill(self) -> FaultWindow:
        """SIGKILL a worker, start it again at once (same id, a fresh process)."""
        worker = self._pick_worker()
        start = time.monotonic()
        worker.kill()
        worker.start()
        return self._window("worker_sigkill", start, f"{worker.name} killed and restarted")

    async def worker_kill_loop(self, done: asyncio.Event, *, limit: int | None) -> None:
        """A worker SIGKILL every 5-8 s until `done` (or `limit` kills)."""
        kills = 0
        while limit is None or kills < limit:
            try:
                async with asyncio.timeout(self.rng.uniform(5.0, 8.0)):
                    await done.wait()
                return
            except TimeoutError:
                pass
            await self.worker_kill()
            kills += 1

    async def worker_stop(self, seconds: float = 8.0) -> FaultWindow:
        """SIGSTOP a worker for `seconds` (its shards move; woken, it must not write)."""
        worker = self._pick_worker()
        self._stopped.add(worker.name)
        start = time.monotonic()
        worker.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            worker.signal(signal.SIGCONT)
            self._stopped.discard(worker.name)
        return self._window("worker_sigstop_8s", start, f"{worker.name} stopped {seconds:g} s")

    async def worker_stop_after_restart(self) -> FaultWindow:
        """SIGKILL a worker, restart it, SIGSTOP it once it holds shards again, and wake it
        only after the router has moved them away."""
        worker = self._pick_worker()
        self._stopped.add(worker.name)
        start = time.monotonic()
        try:
            worker.kill()
            worker.start()
            regained = await self._until(
                lambda: self._positive(self._owned_shards(worker.name)), 20.0
            )
            await asyncio.sleep(2.0)
            worker.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            moved = await self._until(lambda: self._zero(self._owned_shards(worker.name)), 20.0)
            held = time.monotonic() - stopped_at
        finally:
            worker.signal(signal.SIGCONT)
            self._stopped.discard(worker.name)
        detail = (
            f"{worker.name} restarted (shards regained: {regained}), stopped {held:.1f} s "
            f"(shards moved away: {moved})"
        )
        return self._window("worker_sigstop_after_restart", start, detail)

    @staticmethod
    async def _positive(count: Awaitable[int]) -> bool:
        return await count > 0

    @staticmethod
    async def _zero(count: Awaitable[int]) -> bool:
        return await count == 0

    async def router_leader_kill(self) -> FaultWindow:
        """SIGKILL the leading router; restart it once another router leads."""
        leader = (await self.status.status()).leader
        router = next((r for r in self.fleet.routers if r.name == leader), None)
        if router is None:
            router = self.fleet.routers[0]
        start = time.monotonic()
        router.kill()

        async def new_leader() -> bool:
            current = (await self.status.status()).leader
            return current is not None and current != router.name

        took_over = await self._until(new_leader, 20.0)
        router.start()
        detail = f"leader {leader} killed (another took over: {took_over}), restarted"
        return self._window("router_leader_sigkill", start, detail)

    async def nats_cmd_leader_kill(self) -> FaultWindow:
        """SIGKILL the NATS node leading the command stream, restart it 3 s later."""
        info = await self.js.stream_info(self.fleet.settings.subjects.cmd_stream)
        assert info.cluster is not None and info.cluster.leader
        index = self.fleet.nats.index_of(info.cluster.leader)
        start = time.monotonic()
        self.fleet.nats.nodes[index].process.kill()
        await asyncio.sleep(3.0)
        await asyncio.to_thread(self.fleet.nats.restart, index)
        led = await self._until(self._every_stream_led, 30.0)
        detail = (
            f"{info.cluster.leader} (leader of the command stream) killed, restarted "
            f"(every stream and bucket led again after {time.monotonic() - start:.1f} s: {led})"
        )
        return self._window("nats_cmd_leader_sigkill", start, detail)

    async def _every_stream_led(self) -> bool:
        """Every stream and KV bucket has a leader again: the node kill's elections are
        over. Until then the fault is not repaired: heartbeats and placements written to a
        bucket led from the killed node fail, and a worker killed meanwhile cannot be
        replaced sooner, so its turns' wait is the node kill's."""
        try:
            streams = await self.js.streams_info()
        except (nats.errors.Error, TimeoutError):  # an election under way: no answer yet
            return False
        return all(s.cluster is not None and s.cluster.leader for s in streams)

    async def redis_master_kill(self) -> FaultWindow | None:
        """Sentinel mode: SIGKILL the master, restart it (as a replica) after the failover."""
        sentinels = self.fleet.sentinels
        if sentinels is None:
            self.log("redis_master_sigkill: skipped (no replica to fail over to in this mode)")
            return None
        old = await asyncio.to_thread(sentinels.master_port)
        index = next(i for i, s in enumerate(sentinels.servers) if s.port == old)
        start = time.monotonic()
        sentinels.servers[index].process.kill()

        async def failed_over() -> bool:
            try:
                return await asyncio.to_thread(sentinels.master_port) != old
            except UnavailableError:  # no Sentinel names a master mid-failover
                return False

        promoted = await self._until(failed_over, 30.0)
        await asyncio.to_thread(sentinels.restart, index)
        detail = f"master :{old} killed (failed over: {promoted}), restarted as a replica"
        return self._window("redis_master_sigkill", start, detail)

    async def redis_outage(self, seconds: float = 10.0) -> FaultWindow:
        """Redis unreachable for `seconds`: every data server SIGSTOPped (Sentinel and
        Cluster modes: connections hang; Sentinels, still running, may be mid-failover when
        the servers wake and promote a replica that lacks the last writes), or the single
        server stopped and started again on its port from its AOF."""
        start = time.monotonic()
        if self.fleet.redis_single is not None:
            await asyncio.to_thread(self.fleet.redis_single.stop)
            await asyncio.sleep(seconds)
            await self.fleet.restart_redis_single()
            detail = f"single server stopped {seconds:g} s, restarted on its port"
        else:
            servers = self.fleet.redis_data_servers()
            for server in servers:
                server.process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(seconds)
            finally:
                for server in servers:
                    server.process.send_signal(signal.SIGCONT)
            detail = f"all {len(servers)} data servers SIGSTOPped {seconds:g} s"
        return self._window("redis_outage_10s", start, detail)
