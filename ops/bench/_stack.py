"""A private fleet for a benchmark: embedded servers, a router and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats.errors

from flotilla import Fleet
from flotilla.embedded import (
    EmbeddedServer,
    free_port,
    start_nats,
    start_nats_cluster,
    start_redis,
)
from flotilla.runtime import spawn_component
from flotilla.settings import GatewaySettings, Settings


@dataclass
class BenchStack:
    settings: Settings
    data_dir: Path
    servers: list[EmbeddedServer] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)
    worker_logs: list[Path] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def start(cls, *, workers: int, nats_nodes: int = 1, **overrides: object) -> BenchStack:
        """`nats_nodes` > 1: a JetStream cluster of that many nodes, every stream and bucket
        with as many replicas."""
        data = Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
        if nats_nodes > 1:
            cluster = start_nats_cluster(data / "nats", nodes=nats_nodes)
            nats_url, nats_servers = cluster.url, cluster.nodes
        else:
            nats_server = start_nats(data)
            nats_url, nats_servers = nats_server.url, [nats_server]
        redis_server = start_redis(data, persist=False)
        settings = Settings(
            nats_url=nats_url,
            redis_url=redis_server.url,
            prefix=f"b{secrets.token_hex(4)}",
            data_dir=data,
            metrics_port=None,
            replicas=nats_nodes,
        ).with_overrides(**overrides)
        stack = cls(settings, data, [*nats_servers, redis_server])
        roles = [("router", "router")] + [("worker", f"bench-w{i}") for i in range(workers)]
        for role, name in roles:
            proc = spawn_component(
                role, settings.with_overrides(worker_id=name), log=data / f"{name}.log"
            )
            stack.processes.append(proc)
            if role == "worker":
                stack.worker_pids.append(proc.pid)
                stack.workers.append(proc)
                stack.worker_logs.append(data / f"{name}.log")
        return stack

    def workers_alive(self) -> int:
        """How many of the worker processes still run."""
        return sum(proc.poll() is None for proc in self.workers)

    def start_gateway(self, **config: object) -> str:
        """A `flotilla gateway` process on a free port (GatewaySettings `config`); its URL."""
        port = free_port(0)
        settings = GatewaySettings(port=port, **{"rate_limit_rpm": 0, **config})  # type: ignore[arg-type]
        log = self.data_dir / "gateway.log"
        self.processes.append(
            spawn_component("gateway", self.settings, log=log, env=settings.to_env())
        )
        return f"http://127.0.0.1:{port}"

    async def wait_healthy(self, url: str, timeout: float = 30.0) -> None:
        """Until the gateway at `url` answers its health check."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as http:
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not become healthy; see {self.data_dir}")
                await asyncio.sleep(0.1)

    async def wait_ready(self, fleet: Fleet, *, workers: int, timeout: float = 60.0) -> None:
        """Until `workers` workers consume every shard (a new cluster elects leaders first)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(nats.errors.Error):
                status = await fleet.status()
                consuming = sum(len(w.shards) for w in status.workers)
                if consuming == self.settings.shards and len(status.workers) == workers:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet did not come up; see logs in {self.data_dir}")
            await asyncio.sleep(0.1)

    def worker_cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by the worker processes."""
        return cpu_seconds(self.worker_pids)

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(self.servers):
            server.stop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by the processes `pids` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total
