"""The abort benchmark: PROTOCOL §6.6, `agent_abort` within 100 ms of the acknowledged `abort`.

Each try creates a session, starts a turn that is busy in one way (streaming, running the
`shell` tool, waiting on an external NATS tool, sleeping between LLM retries), publishes
`abort` through JetStream and times from its PubAck to the `agent_abort` that a core
subscription on the session's events, opened beforehand, receives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from flotilla import Fleet, ToolCall, ToolServer, serve_tool
from ops.bench._stack import BenchStack
from schemas import Subjects

TARGET_MS = 100.0
TENANT = "bench"
EXTERNAL_TOOL = "bench_sleep"
WARMUP = 3
CASES = ("stream", "shell", "external_tool", "retry")
BASELINE = "idle"
"""`abort` of an idle session, answered by `error{not_running}`: the floor of any command."""

Event = dict[str, Any]


@dataclass
class Handler:
    """One call of the external tool, as its server saw it."""

    ended: float | None = None
    cancelled: bool = False


@dataclass
class Try:
    latency_ms: float
    """PubAck of `abort` to `agent_abort` received: what PROTOCOL §6.6 bounds."""
    publish_ms: float
    """Publish to PubAck; `agent_abort` may even arrive before the PubAck is processed."""
    worker_ms: float
    """The event's `ts` minus the wall clock at the PubAck (1 ms resolution, same host)."""
    arrived: float = 0.0
    try_ms: float = 0.0
    """The whole try: create, prompt, wait until busy, abort, checks."""
    tool_killed: int = 0
    stopped_at_abort: bool | None = None
    stopped_within_1s: bool | None = None
    survivors: list[str] = field(default_factory=list)
    """Shell: the processes still alive when `agent_abort` arrived."""
    handler: Handler | None = None
    moved_on: bool = False
    """Retry case: the turn had left the retry wait (a later retry or LLM event) before it."""

    @property
    def from_publish_ms(self) -> float:
        return self.latency_ms + self.publish_ms


class Watch:
    """Every event of one session, stamped with `perf_counter` on arrival."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Event]] = []
        self._arrived = asyncio.Event()
        self.sub: Subscription | None = None

    async def on_msg(self, msg: Msg) -> None:
        self.events.append((time.perf_counter(), orjson.loads(msg.data)))
        self._arrived.set()

    async def wait(self, match: Callable[[Event], bool], timeout: float) -> tuple[float, Event]:
        """The first event (seen so far or later) that `match` accepts."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for stamp, event in self.events[seen:]:
                    if match(event):
                        return stamp, event
                seen = len(self.events)
                self._arrived.clear()
                await self._arrived.wait()


def is_type(*types: str) -> Callable[[Event], bool]:
    return lambda event: event.get("type") in types


def _answer_to(command_id: str) -> Callable[[Event], bool]:
    return lambda e: e.get("request_id") == command_id and e["type"] in ("session_created", "error")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _processes(needle: bytes) -> list[str]:
    """Live (non-zombie) processes whose command line contains `needle`.

    Each as "pid state ppid pgrp: cmdline".
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            if needle not in cmdline:
                continue
            state, ppid, pgrp = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if state not in ("Z", "X"):
            args = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name} {state} {ppid} {pgrp}: {args}")
    return found


async def _gone(needle: bytes, *, by: float) -> bool:
    """Whether every process matching `needle` is gone by `perf_counter() == by`."""
    while _processes(needle):
        if time.perf_counter() >= by:
            return False
        await asyncio.sleep(0.01)
    return True


async def await_pull_requests(js: JetStreamContext, stream: str, shards: int) -> dict[str, Any]:
    """Wait until every shard consumer has a pull request waiting, so that the tries measure
    aborts and not the worker's start (a starved shard delays its commands by up to ~10 s)."""
    started = time.monotonic()
    most = 0
    while True:
        infos = await js.consumers_info(stream)
        starved = shards - sum(1 for info in infos if (info.num_waiting or 0) > 0)
        most = max(most, starved)
        if starved <= 0 or time.monotonic() - started > 30:
            return {"seconds": time.monotonic() - started, "most_starved_shards": most}
        await asyncio.sleep(0.2)


class AbortBench:
    """Drives one fleet; each `run_*` method is one try and returns its measurements."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.subjects = subjects
        self.handlers: dict[str, Handler] = {}
        self._serial = 0
        self._run = secrets.randbelow(10_000)  # sets this run's `sleep` processes apart

    def _sid(self, case: str) -> str:
        self._serial += 1
        return f"{case.replace('_', '-')}-{self._serial}-{secrets.token_hex(3)}"

    async def command(self, sid: str, op: str, body: dict[str, Any]) -> tuple[float, float, str]:
        """Publish through JetStream: (perf_counter at publish, at PubAck, command id)."""
        command_id = secrets.token_hex(8)
        payload = orjson.dumps(dict(body, op=op, id=command_id))
        subject = self.subjects.cmd(TENANT, sid, op)
        sent = time.perf_counter()
        await self.js.publish(subject, payload, headers={"Nats-Msg-Id": command_id})
        return sent, time.perf_counter(), command_id

    async def session(self, case: str, options: dict[str, Any]) -> tuple[str, Watch]:
        """A new session watched from before its creation; retried while a tool is unknown."""
        for _ in range(50):
            sid = self._sid(case)
            watch = Watch()
            watch.sub = await self.nc.subscribe(self.subjects.evt_session(sid), cb=watch.on_msg)
            await self.nc.flush()
            _, _, cid = await self.command(sid, "create", options)
            _, event = await watch.wait(_answer_to(cid), 10)
            if event["type"] == "session_created":
                return sid, watch
            await watch.sub.unsubscribe()
            if "no tool" not in str(event["data"].get("message")):
                raise RuntimeError(f"create failed: {event['data']}")
            await asyncio.sleep(0.1)  # the worker's tool directory has not seen the tool yet
        raise RuntimeError(f"create kept failing: {event['data']}")

    async def measure(self, sid: str, watch: Watch, done: Callable[[Event], bool]) -> Try:
        sent, acked, _ = await self.command(sid, "abort", {"reason": "bench"})
        acked_wall_ms = time.time() * 1000
        stamp, event = await watch.wait(done, 10)
        return Try(
            latency_ms=(stamp - acked) * 1000,
            publish_ms=(acked - sent) * 1000,
            worker_ms=event["ts"] - acked_wall_ms,
            arrived=stamp,
        )

    async def run_idle(self) -> Try:
        sid, watch = await self.session(BASELINE, {"model": "mock:echo"})
        try:
            return await self.measure(sid, watch, is_type("error"))
        finally:
            await self.close(watch)

    async def run_stream(self) -> Try:
        text = "The quick brown fox jumps over the lazy dog. " * 14  # 630 chars, ~1.6 s
        script = [{"text": text, "chunk_delay_ms": 20}]
        sid, watch = await self.session(
            "stream", {"model": "mock:script", "provider_opts": {"script": script}}
        )
        try:
            await self.prompt_until(sid, watch, is_type("message_delta"))
            return await self.measure(sid, watch, is_type("agent_abort"))
        finally:
            await self.close(watch)

    async def run_retry(self) -> Try:
        script = [{"error": "rate_limit"}] * 4
        sid, watch = await self.session(
            "retry", {"model": "mock:script", "provider_opts": {"script": script}}
        )
        try:
            await self.prompt_until(sid, watch, is_type("retry"))
            result = await self.measure(sid, watch, is_type("agent_abort"))
            retries = [e for _, e in watch.events if e["type"] in ("retry", "error", "agent_end")]
            result.moved_on = len(retries) > 1
            return result
        finally:
            await self.close(watch)

    async def run_shell(self, serial: int) -> Try:
        needle = f"30.{self._run:04d}{serial:04d}"  # `sleep 30.12340042` names this try's
        call = {"name": "shell", "arguments": {"command": f"sleep {needle}; true"}}
        sid, watch = await self.session(
            "shell",
            {
                "model": "mock:script",
                "tools": ["shell"],
                "interrupt_immune_tools": [],  # shell is immune by default: `abort` kills it now
                "provider_opts": {"script": [{"tool_calls": [call]}]},
            },
        )
        try:
            await self.prompt_until(sid, watch, is_type("tool_execution_start"))
            deadline = time.monotonic() + 5
            while not _processes(needle.encode()):
                if any(e["type"] == "tool_execution_end" for _, e in watch.events):
                    raise RuntimeError(f"shell ended early: {watch.events[-1][1]['data']}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the shell command did not start within 5 s")
                await asyncio.sleep(0.002)
            result = await self.measure(sid, watch, is_type("agent_abort"))
            result.survivors = _processes(needle.encode())
            result.stopped_at_abort = not result.survivors
            result.tool_killed = await self.tool_killed(watch)
            result.stopped_within_1s = await _gone(needle.encode(), by=result.arrived + 1)
            for leaked in _processes(needle.encode()):  # the engine's leak; do not let it linger
                with contextlib.suppress(OSError):
                    os.kill(int(leaked.split()[0]), signal.SIGKILL)
            return result
        finally:
            await self.close(watch)

    async def run_external(self) -> Try:
        tag = secrets.token_hex(6)
        call = {"name": EXTERNAL_TOOL, "arguments": {"tag": tag}}
        sid, watch = await self.session(
            "external_tool",
            {
                "model": "mock:script",
                "tools": [EXTERNAL_TOOL],
                "provider_opts": {"script": [{"tool_calls": [call]}]},
            },
        )
        try:
            await self.prompt_until(sid, watch, is_type("tool_execution_start"))
            deadline = time.monotonic() + 5
            while tag not in self.handlers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the external tool's handler did not start within 5 s")
                await asyncio.sleep(0.002)
            result = await self.measure(sid, watch, is_type("agent_abort"))
            result.handler = self.handlers[tag]
            result.stopped_at_abort = result.handler.ended is not None
            result.tool_killed = await self.tool_killed(watch)
            return result  # whether it stopped within 1 s is judged after the run
        finally:
            await self.close(watch)

    async def sleeper(self, args: dict[str, Any], call: ToolCall) -> str:
        """The external tool: sleeps 30 s, recording whether anything stopped it."""
        handler = self.handlers[str(args.get("tag"))] = Handler()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            handler.cancelled = True
            raise
        finally:
            handler.ended = time.perf_counter()
        return "slept"

    async def prompt_until(self, sid: str, watch: Watch, busy: Callable[[Event], bool]) -> None:
        await self.command(sid, "prompt", {"text": "go"})
        _, event = await watch.wait(lambda e: busy(e) or e["type"] in ("agent_end", "error"), 10)
        if not busy(event):
            raise RuntimeError(f"the turn ended before it was busy: {event['data']}")

    async def tool_killed(self, watch: Watch) -> int:
        """`tool_killed` events, which follow `agent_abort`: up to 1 s for the first one."""
        try:
            await watch.wait(is_type("tool_killed"), 1.0)
        except TimeoutError:
            return 0
        await asyncio.sleep(0.02)
        return sum(1 for _, e in watch.events if e["type"] == "tool_killed")

    @staticmethod
    async def close(watch: Watch) -> None:
        if watch.sub is not None:
            await watch.sub.unsubscribe()


def summarize(tries: list[Try]) -> dict[str, Any]:
    latencies = [t.latency_ms for t in tries]
    summary: dict[str, Any] = {
        "n": len(tries),
        "p50_ms": _pct(latencies, 0.5),
        "p90_ms": _pct(latencies, 0.9),
        "p99_ms": _pct(latencies, 0.99),
        "max_ms": max(latencies),
        "over_target": sum(1 for v in latencies if v > TARGET_MS),
        "from_publish_p99_ms": _pct([t.from_publish_ms for t in tries], 0.99),
        "from_publish_max_ms": max(t.from_publish_ms for t in tries),
        "before_puback": sum(1 for v in latencies if v < 0),
        "publish_p50_ms": _pct([t.publish_ms for t in tries], 0.5),
        "worker_ts_p50_ms": _pct([t.worker_ms for t in tries], 0.5),
        "worker_ts_max_ms": max(t.worker_ms for t in tries),
        "try_p50_ms": _pct([t.try_ms for t in tries], 0.5),
        "try_max_ms": max(t.try_ms for t in tries),
        "try_total_s": sum(t.try_ms for t in tries) / 1000,
    }
    if any(t.stopped_at_abort is not None for t in tries):
        summary["tool"] = {
            "stopped_when_agent_abort_arrived": sum(1 for t in tries if t.stopped_at_abort),
            "stopped_within_1s": sum(1 for t in tries if t.stopped_within_1s),
            "tool_killed_events": sum(t.tool_killed for t in tries),
        }
        survivors = [p for t in tries for p in t.survivors]
        if survivors:
            summary["tool"]["alive_when_agent_abort_arrived"] = survivors
        handlers = [t.handler for t in tries if t.handler is not None]
        if handlers:
            summary["tool"]["handler_cancelled"] = sum(1 for h in handlers if h.cancelled)
    if any(t.moved_on for t in tries):
        summary["left_retry_wait_before_abort"] = sum(1 for t in tries if t.moved_on)
    summary["samples"] = {
        "latency_ms": [round(v, 3) for v in latencies],
        "publish_ms": [round(t.publish_ms, 3) for t in tries],
        "worker_ts_ms": [round(t.worker_ms, 1) for t in tries],
    }
    return summary


def print_table(report: dict[str, Any]) -> None:
    print(f"\nabort latency, PubAck -> agent_abort received (target {TARGET_MS:g} ms)")
    header = f"{'case':<16}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'>100ms':>8}"
    print(header + f"{'pub->ack':>10}{'worker ts':>11}")
    rows = [*CASES, "overall", BASELINE]
    for name in rows:
        s = report["cases"].get(name) or (report["overall"] if name == "overall" else None)
        if s is None:
            continue
        label = "idle (baseline)" if name == BASELINE else name
        print(
            f"{label:<16}{s['n']:>5}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}"
            f"{s['max_ms']:>9.2f}{s['over_target']:>8}{s['publish_p50_ms']:>10.2f}"
            f"{s['worker_ts_p50_ms']:>11.1f}"
        )
    for name in ("shell", "external_tool"):
        tool = (report["cases"].get(name) or {}).get("tool")
        if tool:
            n = report["cases"][name]["n"]
            print(
                f"{name}: tool stopped when agent_abort arrived "
                f"{tool['stopped_when_agent_abort_arrived']}/{n}, within 1 s "
                f"{tool['stopped_within_1s']}/{n}, tool_killed events {tool['tool_killed_events']}"
            )
    overall = report["overall"]
    print(
        "pub->ack: publish to PubAck, p50; worker ts: agent_abort's `ts` minus the wall clock "
        "at the PubAck, p50 (1 ms resolution)"
    )
    print(
        f"measured from the publish instead of the PubAck: p99 {overall['from_publish_p99_ms']:.2f}"
        f" ms, max {overall['from_publish_max_ms']:.2f} ms; {overall['before_puback']} tries "
        "received agent_abort before their PubAck"
    )
    moved = report["cases"].get("retry", {}).get("left_retry_wait_before_abort")
    if moved:
        print(f"retry: {moved} tries had left the retry wait before agent_abort")


async def run_abort_bench(args: argparse.Namespace) -> None:
    print(f"starting a fleet: {args.workers} worker process(es), shell enabled ...")
    stack = BenchStack.start(workers=args.workers, shell_enabled=True, hibernate_after_ms=3_600_000)
    report: dict[str, Any] = {
        "bench": "abort",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "params": {"workers": args.workers, "tries": args.tries, "warmup": WARMUP},
        "targets": {"abort_latency_ms": TARGET_MS},
    }
    nc = await nats.connect(stack.settings.nats_url)
    tool: ToolServer | None = None
    try:
        fleet = Fleet(nc, subjects=stack.settings.subjects, tenant=TENANT, owns_nc=False)
        await stack.wait_ready(fleet, workers=args.workers)
        report["startup"] = await await_pull_requests(
            nc.jetstream(), stack.settings.subjects.cmd_stream, stack.settings.shards
        )
        if report["startup"]["most_starved_shards"]:
            print(
                f"note: {report['startup']['most_starved_shards']} of {stack.settings.shards} "
                f"shards had no pull request for {report['startup']['seconds']:.1f} s after "
                "the fleet reported them consumed"
            )
        bench = AbortBench(nc, stack.settings.subjects)
        tool = await serve_tool(
            fleet,
            name=EXTERNAL_TOOL,
            description="sleeps for 30 s",
            parameters={"type": "object", "properties": {"tag": {"type": "string"}}},
            handler=bench.sleeper,
            max_concurrency=2 * (args.tries + WARMUP) + 16,
        )
        runs: dict[str, Callable[[int], Any]] = {
            BASELINE: lambda i: bench.run_idle(),
            "stream": lambda i: bench.run_stream(),
            "shell": bench.run_shell,
            "external_tool": lambda i: bench.run_external(),
            "retry": lambda i: bench.run_retry(),
        }
        tries: dict[str, list[Try]] = {name: [] for name in runs}
        warmup: dict[str, list[float]] = {name: [] for name in runs}
        report["warmup_try_ms"] = warmup
        started = time.monotonic()
        # interleaved, so that a slow phase of the machine hits every case alike
        for i in range(WARMUP + args.tries):
            for name, run in runs.items():
                begun = time.perf_counter()
                result = await run(i)
                result.try_ms = (time.perf_counter() - begun) * 1000
                if i >= WARMUP:
                    tries[name].append(result)
                else:
                    warmup[name].append(round(result.try_ms, 1))
            if sys.stderr.isatty():
                print(f"\r  try {i + 1}/{WARMUP + args.tries}", end="", file=sys.stderr, flush=True)
        report["seconds"] = time.monotonic() - started
        await asyncio.sleep(1.0)  # then judge whether the external tool's handlers stopped
        for result in tries["external_tool"]:
            ended = result.handler.ended if result.handler else None
            result.stopped_within_1s = ended is not None and ended - result.arrived <= 1.0
        report["cases"] = {name: summarize(results) for name, results in tries.items()}
        report["overall"] = summarize([t for name in CASES for t in tries[name]])
        report["overall"].pop("samples")
    finally:
        if tool is not None:
            await tool.close(grace_s=0.1)
        await nc.close()
        stack.stop()
    print_table(report)
    print(f"{WARMUP + args.tries} tries per case in {report['seconds']:.1f} s")
    out = (
        Path(args.out)
        if args.out
        else (Path("ops/bench/results") / f"abort-{time.strftime('%Y%m%d-%H%M%S')}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(f"report: {out}")
