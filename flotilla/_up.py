"""`flotilla up`: the whole fleet on one machine, embedded NATS and Redis by default."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flotilla._connect import connect_nats, redact_url
from flotilla._provision import wait_for_jetstream
from flotilla.embedded import EmbeddedServer, start_nats, start_nats_cluster, start_redis
from flotilla.settings import GatewaySettings, Settings

EXAMPLE = """\
Try it (mock:echo needs no API key):

  flotilla watch --tenant demo &
  flotilla send s1 create --tenant demo --json '{{"model": "mock:echo"}}'
  flotilla send s1 prompt --tenant demo --json '{{"text": "hello"}}'

or from Python with plain nats-py (see README "Publish a command with plain nats-py"):
  NATS_URL={nats}
"""


def spawn_component(
    role: str, settings: Settings, *, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run `flotilla <role>` as a child process configured by `settings`, output to `log`.

    The child gets its own session: a terminal's Ctrl-C reaches only the parent, which stops
    each child with one SIGTERM (a second signal would make it exit without draining).
    """
    child_env = dict(os.environ)
    child_env.update(settings.to_env())
    child_env.update(env or {})
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "flotilla", role],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _step(label: str) -> float:
    print(f"  {label} ...", end="", flush=True)
    return time.monotonic()


def _done(started: float, detail: str = "") -> None:
    print(f" ok ({(time.monotonic() - started) * 1000:.0f} ms){' ' + detail if detail else ''}")


def run_up(
    settings: Settings,
    *,
    workers: int,
    embedded_nats: bool,
    embedded_redis: bool,
    gateway: GatewaySettings | None = None,
    nats_nodes: int = 1,
) -> int:
    """Start servers (when embedded: one NATS node, or a JetStream cluster of `nats_nodes`
    with as many replicas), a router, `workers` workers and the gateway (unless None); stop
    all on Ctrl-C."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    servers: list[EmbeddedServer] = []
    children: list[subprocess.Popen[bytes]] = []
    print(f"flotilla up: data in {data_dir.resolve()}")

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a background `up` inherits SIGINT ignored, and SIGTERM must clean up too.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        settings = _start_servers(
            settings,
            servers,
            embedded_nats=embedded_nats,
            embedded_redis=embedded_redis,
            nats_nodes=nats_nodes,
        )
        logs = data_dir / "logs"
        logs.mkdir(exist_ok=True)
        roles = [("router", "router")] + [("worker", f"worker-{i + 1}") for i in range(workers)]
        if gateway is not None:
            roles.append(("gateway", "gateway"))
        for role, name in roles:
            t = _step(f"starting {name}")
            node = f"{os.uname().nodename}-{name}"
            child = settings.with_overrides(worker_id=node, router_id=node)
            extra = gateway.to_env() if role == "gateway" and gateway is not None else {}
            children.append(spawn_component(role, child, log=logs / f"{name}.log", env=extra))
            _done(t, f"logs: {logs / (name + '.log')}")
        print()
        print(f"NATS:  {redact_url(settings.nats_url)}")
        print(f"Redis: {redact_url(settings.redis_url)}")
        if gateway is not None:
            print(f"Gateway: http://{gateway.host}:{gateway.port} (API docs at /docs)")
        print()
        print(EXAMPLE.format(nats=settings.nats_url))
        print("Ctrl-C stops everything.")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a component exited; stopping the fleet", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        _stop_all(children, servers)


def _start_servers(
    settings: Settings,
    servers: list[EmbeddedServer],
    *,
    embedded_nats: bool,
    embedded_redis: bool,
    nats_nodes: int,
) -> Settings:
    """Start the embedded servers asked for (into `servers`); the settings that reach them."""
    data_dir = settings.data_dir
    if embedded_nats and nats_nodes > 1:
        t = _step(f"starting a {nats_nodes}-node JetStream cluster")
        cluster = start_nats_cluster(data_dir / "nats-cluster", nodes=nats_nodes)
        servers.extend(cluster.nodes)
        settings = settings.with_overrides(nats_url=cluster.url, replicas=min(nats_nodes, 5))
        asyncio.run(_jetstream_ready(settings))
        _done(t, f"{cluster.url} (replicas {settings.replicas})")
    elif embedded_nats:
        t = _step("starting nats-server (JetStream)")
        servers.append(start_nats(data_dir, port=4222))  # the default port when free
        settings = settings.with_overrides(nats_url=servers[-1].url)
        _done(t, redact_url(settings.nats_url))
    if embedded_redis:
        t = _step("starting redis-server")
        servers.append(start_redis(data_dir, port=6379))
        settings = settings.with_overrides(redis_url=servers[-1].url)
        _done(t, redact_url(settings.redis_url))
    return settings


async def _jetstream_ready(settings: Settings) -> None:
    nc = await connect_nats(settings, name="flotilla up")
    try:
        await wait_for_jetstream(nc.jetstream())
    finally:
        await nc.close()


def _stop_all(children: list[subprocess.Popen[bytes]], servers: list[EmbeddedServer]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    for server in reversed(servers):
        server.stop()
