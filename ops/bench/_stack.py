"""A private fleet for a benchmark: embedded servers, a router and worker processes."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from flotilla import Fleet
from flotilla._up import spawn_component
from flotilla.embedded import EmbeddedServer, start_nats, start_redis
from flotilla.settings import Settings


@dataclass
class BenchStack:
    settings: Settings
    data_dir: Path
    servers: list[EmbeddedServer] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, *, workers: int, **overrides: object) -> BenchStack:
        data = Path(tempfile.mkdtemp(prefix="flotilla-bench-"))
        nats_server = start_nats(data)
        redis_server = start_redis(data, persist=False)
        settings = Settings(
            nats_url=nats_server.url,
            redis_url=redis_server.url,
            prefix=f"b{secrets.token_hex(4)}",
            data_dir=data,
            metrics_port=None,
        ).with_overrides(**overrides)
        stack = cls(settings, data, [nats_server, redis_server])
        roles = [("router", "router")] + [("worker", f"bench-w{i}") for i in range(workers)]
        for role, name in roles:
            proc = spawn_component(
                role, settings.with_overrides(worker_id=name), log=data / f"{name}.log"
            )
            stack.processes.append(proc)
            if role == "worker":
                stack.worker_pids.append(proc.pid)
        return stack

    async def wait_ready(self, fleet: Fleet, *, workers: int, timeout: float = 30.0) -> None:
        """Until `workers` workers consume every shard."""
        deadline = time.monotonic() + timeout
        while True:
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
