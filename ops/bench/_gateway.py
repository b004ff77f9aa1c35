"""The gateway benchmark (issue #5): prompt → first SSE delta, and session reads under load.

A private fleet (embedded NATS and Redis, a router, worker processes) and one `flotilla
gateway` process. Two measures:

* latency from sending `POST /v1/sessions/:id/prompt` to the first `message_delta` on an
  SSE stream of that session opened beforehand (`mock:echo`), one prompt at a time;
* throughput of `GET /v1/sessions/:id` with `--clients` concurrent aiohttp clients (each
  its own connection, looping for `--seconds`), with the latency of each request and the
  CPU time the gateway and the client spent per request.

The rate limit is off (`GATEWAY_RATE_LIMIT_RPM=0`, so no request is refused); everything
else is the default path: the key check, the admission script (which still counts the
request in the key's meter) and one Redis read of the session record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_sse import aconnect_sse

from flotilla import Fleet
from ops.bench._stack import BenchStack, cpu_seconds

KEY = "bench-key"
TENANT = "bench"
WARMUP = 20


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(_pct(values, 0.50), 3),
        "p99": round(_pct(values, 0.99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


async def _first_deltas(http: httpx.AsyncClient, sid: str, prompts: int) -> list[float]:
    """ms from sending each prompt to its first message_delta, on one SSE stream kept open
    across the prompts (as a UI does), one prompt at a time."""
    deltas: asyncio.Queue[float] = asyncio.Queue()
    ends: asyncio.Queue[None] = asyncio.Queue()
    connected = asyncio.Event()

    async def read() -> None:
        async with aconnect_sse(http, "GET", f"/v1/sessions/{sid}/events") as source:
            connected.set()
            in_turn = False
            async for sse in source.aiter_sse():
                if sse.event == "message_delta" and not in_turn:
                    in_turn = True
                    deltas.put_nowait(time.perf_counter())
                elif sse.event == "agent_end":
                    in_turn = False
                    ends.put_nowait(None)

    reader = asyncio.create_task(read())
    await connected.wait()  # the stream's start was fixed when its request arrived
    measured = []
    try:
        for _ in range(prompts):
            sent = time.perf_counter()
            reply = await http.post(f"/v1/sessions/{sid}/prompt", json={"text": "ping"})
            reply.raise_for_status()
            received = await asyncio.wait_for(deltas.get(), 10)
            await asyncio.wait_for(ends.get(), 10)
            measured.append((received - sent) * 1000)
    finally:
        reader.cancel()
    return measured


async def _reads(
    url: str, sids: list[str], *, clients: int, seconds: float, gateway_pid: int
) -> dict[str, Any]:
    """`clients` keep-alive connections, each looping GET /v1/sessions/:id over `sids`.

    The load comes from aiohttp, whose client costs a fraction of httpx's per request: on a
    small machine the load generator shares the cores with the gateway, so what it spends
    is taken from the gateway. Both processes' CPU time per request is reported, so a run
    tells whether the gateway or the client was the limit.
    """
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        connector = aiohttp.TCPConnector(limit=1)  # one connection per client
        async with aiohttp.ClientSession(
            url, connector=connector, headers={"X-API-Key": KEY}
        ) as http:
            n = i
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with http.get(f"/v1/sessions/{sids[n % len(sids)]}") as reply:
                    await reply.read()
                    if reply.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - started) * 1000)
                n += clients

    gateway_cpu = cpu_seconds([gateway_pid])
    client_cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    gateway_cpu = cpu_seconds([gateway_pid]) - gateway_cpu
    client_cpu = time.process_time() - client_cpu
    requests = len(latencies)
    return {
        "requests": requests,
        "errors": errors,
        "requests_per_s": round(requests / elapsed, 1),
        "latency_ms": _summary(latencies),
        "gateway_cpu_us_per_request": round(gateway_cpu / requests * 1e6, 1),
        "gateway_cpu_share": round(gateway_cpu / elapsed, 2),
        "client_cpu_us_per_request": round(client_cpu / requests * 1e6, 1),
    }


async def run_gateway_bench(args: argparse.Namespace) -> None:
    print(f"starting a fleet: {args.workers} worker process(es) and a gateway ...", flush=True)
    stack = BenchStack.start(workers=args.workers)
    url = stack.start_gateway(api_keys=f"{KEY}:{TENANT}")
    gateway = stack.processes[-1]
    try:
        async with await Fleet.connect(settings=stack.settings, tenant=TENANT) as fleet:
            await stack.wait_ready(fleet, workers=args.workers)
        async with httpx.AsyncClient(
            base_url=url, headers={"X-API-Key": KEY}, timeout=30.0
        ) as http:
            await stack.wait_healthy(url)
            sid = (await http.post("/v1/sessions", json={"model": "mock:echo"})).json()["sessionId"]
            print(f"prompt → first SSE delta, {args.prompts} prompts ...", flush=True)
            first_delta = (await _first_deltas(http, sid, WARMUP + args.prompts))[WARMUP:]
            sids = [
                (await http.post("/v1/sessions", json={"model": "mock:echo"})).json()["sessionId"]
                for _ in range(100)
            ]
        print(f"GET /v1/sessions/:id, {args.clients} clients, {args.seconds} s ...", flush=True)
        load = {"clients": args.clients, "gateway_pid": gateway.pid}
        await _reads(url, sids, seconds=1.0, **load)  # warm-up
        reads = await _reads(url, sids, seconds=args.seconds, **load)
    finally:
        stack.stop()
    report = {
        "bench": "gateway",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "workers": args.workers,
        "prompt_to_first_delta_ms": _summary(first_delta),
        "get_session": {"clients": args.clients, "seconds": args.seconds, **reads},
    }
    fd = report["prompt_to_first_delta_ms"]
    print(f"\nprompt → first SSE delta: p50 {fd['p50']:.2f} ms, p99 {fd['p99']:.2f} ms")
    lat = reads["latency_ms"]
    print(
        f"GET /v1/sessions/:id with {args.clients} clients: {reads['requests_per_s']:.0f} req/s "
        f"(p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, {reads['errors']} errors)"
    )
    print(
        f"  CPU per request: gateway {reads['gateway_cpu_us_per_request']:.0f} µs "
        f"(busy {reads['gateway_cpu_share']:.0%} of a core), "
        f"client {reads['client_cpu_us_per_request']:.0f} µs"
    )
    out = Path(args.out or f"ops/bench/results/gateway-{time.strftime('%Y%m%d-%H%M%S')}.json")
    _write(out, report)
    print(f"report: {out}")


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
