"""The turns benchmark: latency, throughput, CPU per turn, history cost, resume latency.

Everything goes through a real fleet (worker processes, NATS JetStream, Redis) driven by a
plain nats-py client, exactly as any user would: publish `prompt`, wait for `agent_end`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from flotilla import Fleet
from ops.bench._stack import BenchStack
from schemas import Subjects

TARGETS = {
    "sequential_p50_ms": 3.0,
    "sequential_p99_ms": 15.0,
    "throughput_turns_per_s": 1400,
    "worker_cpu_us_per_turn": 700,
    "history_1000_over_10": 1.2,
    "resume_p50_ms": 10.0,
}


class Driver:
    """Publishes commands and resolves a future when each one's awaited event arrives."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self.nc = nc
        self.subjects = subjects
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        for type_ in ("agent_end", "session_created", "session_hibernated", "error"):
            await self.nc.subscribe(f"{self.subjects.prefix}.evt.*.*.*.*.{type_}", cb=self._on)

    async def _on(self, msg: Msg) -> None:
        event = orjson.loads(msg.data)
        future = self.waiting.pop(event.get("request_id") or "", None)
        if future is not None and not future.done():
            future.set_result(event)

    async def send(self, sid: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        command_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        body = dict(body, op=op, id=command_id)
        await self.nc.publish(
            self.subjects.cmd("bench", sid, op),
            orjson.dumps(body),
            headers={"Nats-Msg-Id": command_id},
        )
        event = await asyncio.wait_for(future, 30)
        if event["type"] == "error":
            raise RuntimeError(f"{op} on {sid}: {event['data']}")
        return event


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _progress(label: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {label}: {done}/{total}", end="", file=sys.stderr, flush=True)


async def _sequential(driver: Driver, sid: str, turns: int, label: str) -> list[float]:
    latencies = []
    for i in range(turns):
        started = time.perf_counter()
        await driver.send(sid, "prompt", {"text": f"turn {i}"})
        latencies.append((time.perf_counter() - started) * 1000)
        if i % 50 == 0:
            _progress(label, i, turns)
    _progress(label, turns, turns)
    return latencies


async def run_turns_bench(args: argparse.Namespace) -> None:
    nodes = "embedded NATS" if args.nats_nodes == 1 else f"a {args.nats_nodes}-node NATS cluster"
    print(f"starting a fleet: {args.workers} worker process(es), {nodes} and Redis ...")
    stack = BenchStack.start(
        workers=args.workers, nats_nodes=args.nats_nodes, hibernate_after_ms=3_600_000
    )
    report: dict[str, Any] = {
        "bench": "turns",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": {
            "workers": args.workers,
            "nats_nodes": args.nats_nodes,
            "sessions": args.sessions,
            "in_flight": args.in_flight,
            "turns": args.turns,
            "sequential": args.sequential,
        },
        "targets": TARGETS,
    }
    nc = await nats.connect(stack.settings.nats_servers, pending_size=64 * 1024 * 1024)
    try:
        fleet = Fleet(nc, subjects=stack.settings.subjects, tenant="bench", owns_nc=False)
        await stack.wait_ready(fleet, workers=args.workers)
        driver = Driver(nc, stack.settings.subjects)
        await driver.start()

        # 1. sequential latency, one session, mock:echo
        await driver.send("seq", "create", {"model": "mock:echo"})
        await _sequential(driver, "seq", 100, "warm-up")
        cpu0 = stack.worker_cpu_seconds()
        latencies = await _sequential(driver, "seq", args.sequential, "sequential")
        seq_cpu = (stack.worker_cpu_seconds() - cpu0) / args.sequential
        report["sequential"] = {
            "turns": args.sequential,
            "p50_ms": _pct(latencies, 0.5),
            "p99_ms": _pct(latencies, 0.99),
            "mean_ms": statistics.fmean(latencies),
            "worker_cpu_us_per_turn": seq_cpu * 1e6,
        }
        print(
            f"\nsequential: p50 {report['sequential']['p50_ms']:.2f} ms, "
            f"p99 {report['sequential']['p99_ms']:.2f} ms"
        )

        # 2. history cost: 10 vs 1,000 messages of prior history
        history: dict[str, Any] = {}
        for size in (10, 1000):
            prior = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " * 8}
                for i in range(size)
            ]
            sid = f"hist-{size}"
            await driver.send(sid, "create", {"model": "mock:echo", "messages": prior})
            await _sequential(driver, sid, 50, f"history {size} warm-up")
            cpu0 = stack.worker_cpu_seconds()
            lat = await _sequential(driver, sid, 300, f"history {size}")
            history[str(size)] = {
                "p50_ms": _pct(lat, 0.5),
                "p99_ms": _pct(lat, 0.99),
                "worker_cpu_us_per_turn": (stack.worker_cpu_seconds() - cpu0) / 300 * 1e6,
            }
        history["ratio_p50"] = history["1000"]["p50_ms"] / history["10"]["p50_ms"]
        history["ratio_cpu"] = (
            history["1000"]["worker_cpu_us_per_turn"] / history["10"]["worker_cpu_us_per_turn"]
        )
        report["history"] = history
        print(
            f"\nhistory 1000 vs 10: p50 x{history['ratio_p50']:.2f}, "
            f"cpu x{history['ratio_cpu']:.2f}"
        )

        # 3. throughput: N sessions, a fixed number of turns in flight
        sids = [f"s{i}" for i in range(args.sessions)]
        for start in range(0, len(sids), 200):
            await asyncio.gather(
                *(
                    driver.send(s, "create", {"model": "mock:echo"})
                    for s in sids[start : start + 200]
                )
            )
        queue: asyncio.Queue[str] = asyncio.Queue()
        for sid in sids:
            queue.put_nowait(sid)
        remaining = args.turns
        done = 0

        async def lane() -> None:
            nonlocal remaining, done
            while remaining > 0:
                remaining -= 1
                sid = await queue.get()
                await driver.send(sid, "prompt", {"text": "hello"})
                queue.put_nowait(sid)
                done += 1
                if done % 500 == 0:
                    _progress("throughput", done, args.turns)

        cpu0 = stack.worker_cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(args.in_flight)))
        elapsed = time.perf_counter() - started
        cpu = stack.worker_cpu_seconds() - cpu0
        report["throughput"] = {
            "sessions": args.sessions,
            "in_flight": args.in_flight,
            "turns": args.turns,
            "seconds": elapsed,
            "turns_per_s": args.turns / elapsed,
            "worker_cpu_us_per_turn": cpu / args.turns * 1e6,
        }
        print(
            f"\nthroughput: {report['throughput']['turns_per_s']:.0f} turns/s, "
            f"worker CPU {report['throughput']['worker_cpu_us_per_turn']:.0f} us/turn"
        )

        # 4. resume latency of hibernated sessions vs resident ones
        sample = sids[:200]
        for sid in sample:
            await driver.send(sid, "hibernate", {})
        resume = []
        for i, sid in enumerate(sample):
            t0 = time.perf_counter()
            await driver.send(sid, "prompt", {"text": "wake up"})
            resume.append((time.perf_counter() - t0) * 1000)
            _progress("resume", i + 1, len(sample))
        report["resume"] = {
            "sessions": len(sample),
            "p50_ms": _pct(resume, 0.5),
            "p99_ms": _pct(resume, 0.99),
        }
        print(
            f"\nresume after hibernation: p50 {report['resume']['p50_ms']:.2f} ms, "
            f"p99 {report['resume']['p99_ms']:.2f} ms"
        )
    finally:
        await nc.close()
        stack.stop()
    out = (
        Path(args.out)
        if args.out
        else (Path("ops/bench/results") / f"turns-{time.strftime('%Y%m%d-%H%M%S')}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
