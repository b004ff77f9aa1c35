"""The registry benchmark: PROTOCOL §7, a lookup is an in-process read, a broadcast reaches
every node within 50 ms.

A real fleet (router and worker processes, embedded NATS and Redis, a fleet key) and N node
processes, each holding a registry copy as a worker or gateway does and printing the wall
clock when its copy applies a revision. The bench registers profiles one after another and
times, per change, from just before the `register` request to each node's copy having it.
Lookups (and cached resolutions) are timed in this process on a loaded copy.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats
import orjson

from flotilla.registry import ProviderRegistryCopy, RegistryClient, ResolverCache
from flotilla.runtime import FleetCipher, connect_redis, run_async
from flotilla.settings import Settings
from ops.bench._stack import BenchStack
from schemas import ProviderProfile

TARGETS = {"lookup_us": 1.0, "broadcast_all_nodes_p99_ms": 50.0}
WARMUP = 20
LOOKUPS = 1_000_000


async def run_registry_bench(args: argparse.Namespace) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    print(f"starting a fleet: {args.workers} worker process(es), {args.nodes} registry nodes ...")
    stack = BenchStack.start(workers=args.workers, fleet_key=key)
    settings = stack.settings
    report: dict[str, Any] = {
        "bench": "registry",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": {"workers": args.workers, "nodes": args.nodes, "changes": args.changes},
        "targets": TARGETS,
    }
    nc = await nats.connect(settings.nats_url)
    nodes: list[asyncio.subprocess.Process] = []
    try:
        client = RegistryClient(
            nc, subjects=settings.subjects, cipher=FleetCipher.from_setting(key), timeout=10
        )
        await _until_router_answers(client)
        nodes = [await _spawn_node(settings, stack.data_dir, i) for i in range(args.nodes)]
        seen = [await _ready(node) for node in nodes]
        arrived = asyncio.Event()
        readers = [
            asyncio.create_task(_read_applied(node, seen[i], arrived))
            for i, node in enumerate(nodes)
        ]
        reply_ms, reach_ms, all_ms = [], [], []
        for i in range(WARMUP + args.changes):
            profile = ProviderProfile(
                name=f"tenant-{i % 50}",
                provider="openai",
                opts={"api_key": f"sk-bench-{i}", "base_url": "http://127.0.0.1:9/v1"},
                tenant=f"t{i % 50}",
            )
            sent = time.time_ns()
            revision = await client.register(profile)
            replied = time.time_ns()
            async with asyncio.timeout(10):
                while True:
                    arrived.clear()
                    if all(revision in s for s in seen):
                        break
                    await arrived.wait()
            if i < WARMUP:
                continue
            reply_ms.append((replied - sent) / 1e6)
            per_node = [(s.pop(revision) - sent) / 1e6 for s in seen]
            reach_ms += per_node
            all_ms.append(max(per_node))
        for task in readers:
            task.cancel()
        report["broadcast"] = {
            "changes": args.changes,
            "register_reply_p50_ms": _pct(reply_ms, 0.5),
            "register_reply_p99_ms": _pct(reply_ms, 0.99),
            "one_node_p50_ms": _pct(reach_ms, 0.5),
            "one_node_p99_ms": _pct(reach_ms, 0.99),
            "all_nodes_p50_ms": _pct(all_ms, 0.5),
            "all_nodes_p99_ms": _pct(all_ms, 0.99),
            "all_nodes_max_ms": max(all_ms),
        }
        b = report["broadcast"]
        print(
            f"broadcast, {args.changes} changes to {args.nodes} nodes: register reply p50 "
            f"{b['register_reply_p50_ms']:.2f} ms; every node has it p50 "
            f"{b['all_nodes_p50_ms']:.2f} ms, p99 {b['all_nodes_p99_ms']:.2f} ms, "
            f"max {b['all_nodes_max_ms']:.2f} ms (one node p99 {b['one_node_p99_ms']:.2f} ms)"
        )
        report["lookup"] = await _lookups(settings, nc)
        lk = report["lookup"]
        print(
            f"lookup: {lk['lookup_ns']:.0f} ns; lookup + cached resolution "
            f"{lk['lookup_and_cached_ns']:.0f} ns; a resolution that decrypts "
            f"{lk['resolve_miss_us']:.1f} us"
        )
    finally:
        for node in nodes:
            if node.returncode is None:
                node.terminate()
                await node.wait()
        await nc.close()
        stack.stop()
    out = (
        Path(args.out)
        if args.out
        else Path("ops/bench/results") / f"registry-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")


async def _until_router_answers(client: RegistryClient) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.list()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _spawn_node(settings: Settings, data: Path, index: int) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env.update(settings.to_env())
    log = (data / f"node-{index}.log").open("ab")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops.bench._registry",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        stdin=asyncio.subprocess.DEVNULL,
    )


async def _ready(node: asyncio.subprocess.Process) -> dict[int, int]:
    assert node.stdout is not None
    async with asyncio.timeout(30):
        while not (line := await node.stdout.readline()).startswith(b"ready"):
            if not line:
                raise RuntimeError("a registry node exited; see node-*.log in the data dir")
    return {}


async def _read_applied(
    node: asyncio.subprocess.Process, seen: dict[int, int], arrived: asyncio.Event
) -> None:
    """`<revision> <time_ns>` lines of one node into `seen`."""
    assert node.stdout is not None
    while line := await node.stdout.readline():
        revision, stamp = line.split()
        seen[int(revision)] = int(stamp)
        arrived.set()


async def _lookups(settings: Settings, nc: Any) -> dict[str, float]:
    redis = connect_redis(settings)
    copy = ProviderRegistryCopy(
        nc, redis, subjects=settings.subjects, key_prefix=settings.redis_prefix
    )
    await copy.start()
    try:
        resolver = ResolverCache(cipher=FleetCipher.from_setting(settings.fleet_key))
        name = "tenant-7"
        profile = copy.lookup(name)
        assert profile is not None
        started = time.perf_counter()
        await resolver.resolve(profile)
        miss_us = (time.perf_counter() - started) * 1e6
        lookup = copy.lookup
        cached = resolver.cached
        runs: list[float] = []
        both: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter_ns()
            for _ in range(LOOKUPS):
                lookup(name)
            runs.append((time.perf_counter_ns() - t0) / LOOKUPS)
            t0 = time.perf_counter_ns()
            for _ in range(LOOKUPS):
                found = lookup(name)
                assert found is not None
                cached(found)
            both.append((time.perf_counter_ns() - t0) / LOOKUPS)
        return {
            "profiles": len(copy.profiles),
            "lookup_ns": min(runs),
            "lookup_ns_median_of_5": statistics.median(runs),
            "lookup_us": min(runs) / 1000,
            "lookup_and_cached_ns": min(both),
            "resolve_miss_us": miss_us,
        }
    finally:
        await copy.close()
        await redis.aclose()


async def _node() -> None:
    """One registry node: a copy that prints each revision it applies, with the wall clock."""
    settings = Settings.from_env()
    nc = await nats.connect(settings.nats_url)
    redis = connect_redis(settings)
    copy: ProviderRegistryCopy

    def applied(_: str | None) -> None:
        sys.stdout.write(f"{copy.revision} {time.time_ns()}\n")
        sys.stdout.flush()

    copy = ProviderRegistryCopy(
        nc, redis, subjects=settings.subjects, key_prefix=settings.redis_prefix, on_change=applied
    )
    await copy.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()  # until terminated
    finally:
        await copy.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


if __name__ == "__main__":
    run_async(_node())
