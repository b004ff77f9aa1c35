"""The fleet under chaos: a 3-node JetStream cluster (R3), Redis (Sentinels, a Redis Cluster
or one server), two routers and three workers, each a process of its own on loopback."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flotilla.embedded import (
    EmbeddedCluster,
    EmbeddedRedisCluster,
    EmbeddedSentinels,
    EmbeddedServer,
    start_nats_cluster,
    start_redis,
    start_redis_cluster,
    start_redis_sentinels,
)
from flotilla.runtime import spawn_component
from flotilla.settings import Settings

REDIS_MODES = ("sentinel", "cluster", "single")


@dataclass
class Component:
    """A router or worker process, restartable under the same id and log."""

    role: str
    name: str
    settings: Settings
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        overrides = {"worker_id" if self.role == "worker" else "router_id": self.name}
        self.process = spawn_component(
            self.role, self.settings.with_overrides(**overrides), log=self.log
        )

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap (a stopped process is woken first so it can die)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.send_signal(signal.SIGCONT)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL past 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class ChaosFleet:
    """Servers and components of one campaign; `stop()` tears down in reverse order."""

    settings: Settings
    data_dir: Path
    redis_mode: str
    nats: EmbeddedCluster
    sentinels: EmbeddedSentinels | None = None
    redis_cluster: EmbeddedRedisCluster | None = None
    redis_single: EmbeddedServer | None = None
    routers: list[Component] = field(default_factory=list)
    workers: list[Component] = field(default_factory=list)

    @classmethod
    def start(cls, *, redis_mode: str, workers: int = 3, routers: int = 2) -> ChaosFleet:
        """Servers first, then the routers and workers (not yet waited for)."""
        data = Path(tempfile.mkdtemp(prefix="flotilla-chaos-"))
        nats = start_nats_cluster(data / "nats", nodes=3)
        fleet = cls(Settings(), data, redis_mode, nats)
        try:
            redis_settings = fleet._start_redis()
            fleet.settings = Settings(
                nats_url=nats.url,
                replicas=3,
                prefix=f"c{secrets.token_hex(4)}",
                shards=16,
                data_dir=data,
                metrics_port=None,
                hibernate_after_ms=3_600_000,
                **redis_settings,  # type: ignore[arg-type]
            )
            for i in range(routers):
                fleet.routers.append(fleet._component("router", f"r{i + 1}"))
            for i in range(workers):
                fleet.workers.append(fleet._component("worker", f"w{i + 1}"))
        except BaseException:
            fleet.stop()
            raise
        return fleet

    def _start_redis(self) -> dict[str, object]:
        home = self.data_dir / "redis"
        if self.redis_mode == "sentinel":
            self.sentinels = start_redis_sentinels(home, replicas=2, sentinels=3)
            return {
                "redis_url": self.sentinels.servers[0].url,
                "redis_sentinels": tuple(self.sentinels.setting.split(",")),
                "redis_sentinel_master": self.sentinels.master_name,
            }
        if self.redis_mode == "cluster":
            self.redis_cluster = start_redis_cluster(home, masters=3)
            return {"redis_url": self.redis_cluster.url, "redis_cluster": True}
        self.redis_single = start_redis(home)
        return {"redis_url": self.redis_single.url}

    def _component(self, role: str, name: str) -> Component:
        component = Component(role, name, self.settings, self.data_dir / f"{name}.log")
        component.start()
        return component

    def redis_data_servers(self) -> list[EmbeddedServer]:
        """Every Redis process that holds data (not the Sentinels)."""
        if self.sentinels is not None:
            return self.sentinels.servers
        if self.redis_cluster is not None:
            return self.redis_cluster.nodes
        assert self.redis_single is not None
        return [self.redis_single]

    async def restart_redis_single(self) -> None:
        """Start the single server again on its port, from its AOF."""
        assert self.redis_single is not None
        port = self.redis_single.port
        self.redis_single.stop()
        home = self.data_dir / "redis"
        self.redis_single = await asyncio.to_thread(start_redis, home, port=port)

    def stop(self) -> None:
        for component in [*self.workers, *self.routers]:
            component.signal(signal.SIGCONT)
        for component in [*self.workers, *self.routers]:
            component.stop()
        for server in self.redis_data_servers() if self._has_redis() else []:
            server.process.send_signal(signal.SIGCONT)
        if self.sentinels is not None:
            self.sentinels.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
        if self.redis_single is not None:
            self.redis_single.stop()
        self.nats.stop()

    def _has_redis(self) -> bool:
        return any((self.sentinels, self.redis_cluster, self.redis_single))
