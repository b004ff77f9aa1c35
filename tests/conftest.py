"""One real nats-server and one real Redis per test session; a fresh prefix per test.

`FLOTILLA_TEST_REDIS=cluster` runs the session against a 3-master Redis Cluster instead of
one Redis (`REDIS_URL`, when given, then names one of its nodes); every client of the tests
comes from `connect_redis`, as the fleet's do, with `redis_cluster` set accordingly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import signal
import socket
import sys
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy
from redis.asyncio.cluster import ClusterNode, RedisCluster

from flotilla import Fleet, Session, Settings
from flotilla.embedded import start_nats, start_redis, start_redis_cluster
from flotilla.keys import RedisKeys, session_member
from flotilla.runtime import connect_nats, connect_redis, spawn_component
from router import Router
from schemas import Event
from workers import Worker


@pytest.fixture(autouse=True)
def _no_real_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would reach a real LLM provider."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    sys.modules.setdefault("litellm", None)  # type: ignore[arg-type]


# -- the real litellm, for the tests of real model paths ---------------------------------------
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture(scope="session")
def _litellm_module() -> ModuleType:
    """litellm imported once per run (it takes seconds), then blocked again for other tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.delitem(sys.modules, "litellm", raising=False)
        module = importlib.import_module("litellm")
    # Leaving the context put back the block (or nothing, before the first test): either way
    # `import litellm` fails again outside `litellm_loopback`.
    sys.modules["litellm"] = None  # type: ignore[assignment]
    return module


@pytest.fixture
def litellm_loopback(
    monkeypatch: pytest.MonkeyPatch, _litellm_module: ModuleType
) -> Iterator[list[str]]:
    """Lift the `_no_real_llm` block for this test; any host but loopback is refused.

    Yields the refused host names, and fails the test if there is any.
    """
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setitem(sys.modules, "litellm", _litellm_module)
    refused: list[str] = []
    resolve = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK:
            refused.append(name)
            raise OSError(f"litellm_loopback: {name!r} is not a loopback host")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    # litellm uses pydantic APIs deprecated since 2.11; `filterwarnings = error` would turn
    # them into failed calls. Only warnings raised from litellm's own modules are let through.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"litellm\.")
        # pydantic warns when it builds a litellm TypedDict with `ReadOnly` items; litellm
        # builds some models lazily, at whichever test first uses them.
        warnings.filterwarnings("ignore", message=r".*using the `ReadOnly` qualifier")
        yield refused
    assert not refused, f"litellm tried to reach {refused}"


REDIS_CLUSTER = os.environ.get("FLOTILLA_TEST_REDIS", "") == "cluster"
"""The test session's Redis is a Redis Cluster (its URL names one node)."""


def redis_client(redis_url: str) -> aioredis.Redis:
    """A client of the test session's Redis (single or Cluster), as the fleet makes them."""
    return connect_redis(Settings(redis_url=redis_url, redis_cluster=REDIS_CLUSTER))


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(nats_url, redis_url): from NATS_URL / REDIS_URL, else started for this session."""
    if os.environ.get("NATS_URL") and os.environ.get("REDIS_URL"):
        yield os.environ["NATS_URL"], os.environ["REDIS_URL"]
        return
    data = tmp_path_factory.mktemp("servers")
    nats_server = start_nats(data)
    redis_server = start_redis_cluster(data) if REDIS_CLUSTER else start_redis(data, persist=False)
    try:
        yield nats_server.url, redis_server.url
    finally:
        nats_server.stop()
        redis_server.stop()


@contextlib.asynccontextmanager
async def redis_refused(client: aioredis.Redis, port: int) -> AsyncIterator[None]:
    """Fault injection: within the block every connection `client` makes (to a single Redis,
    or to any node of a Cluster) goes to `port`, where nothing listens."""
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        nodes = [*manager.startup_nodes.values(), *manager.nodes_cache.values()]
        pools: list[Any] = list({id(node): node for node in nodes}.values())
    else:
        pools = [client.connection_pool]
    ports = [pool.connection_kwargs["port"] for pool in pools]

    async def reconnect(to: list[int]) -> None:
        for pool, target in zip(pools, to, strict=True):
            pool.connection_kwargs["port"] = target
            await pool.disconnect()
            if isinstance(pool, ClusterNode):  # its connections keep their own address
                pool._connections.clear()
                pool._free.clear()
            else:
                pool.reset()

    await reconnect([port] * len(pools))
    try:
        yield
    finally:
        await reconnect(ports)


class OwnRedis:
    """A Redis server of one test's own (AOF on), to stop and start again on its port: an
    outage the test controls without touching the session's shared server."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.server = start_redis(home, persist=True)
        self.port = self.server.port
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = start_redis(self.home, port=self.port, persist=True)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path / "redis")
    try:
        yield redis
    finally:
        redis.stop()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until `check()` is true, polling; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def prompt_rounds(
    sessions: list[Session], rounds: int, sent: list[str], *, pause: float
) -> None:
    """Prompt every session `r0`, `r1`... `rounds` times over, recording the prompt ids in
    `sent`; `pause` seconds between rounds (the load of a failover test)."""
    for r in range(rounds):
        for session in sessions:
            sent.append(await session.prompt(f"r{r}"))
        await asyncio.sleep(pause)


def count_ends(sessions: list[Session], ends: Counter[str]) -> list[Event]:
    """Count, by request id, the `agent_end` events the sessions buffered; returns them."""
    found = []
    for session in sessions:
        while not session._events.empty():
            event = session._events.get_nowait()
            if event.type == "agent_end" and event.request_id:
                ends[event.request_id] += 1
                found.append(event)
    return found


class WorkerProcess:
    """A worker in its own process, for fault injection (SIGKILL, SIGSTOP)."""

    def __init__(self, settings: Settings, worker_id: str, log: Path) -> None:
        self.worker_id = worker_id
        self.process = spawn_component(
            "worker", settings.with_overrides(worker_id=worker_id), log=log
        )

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


class Harness:
    """A fleet under test: in-process router and workers, worker processes on demand."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.tmp = tmp
        self.tasks: list[asyncio.Task[None]] = []
        self.services: list[Worker | Router] = []
        self.processes: list[WorkerProcess] = []
        self.fleet: Fleet | None = None
        self.nc: NATS | None = None
        self.redis = connect_redis(settings)

    async def start_router(self) -> Router:
        routers = sum(isinstance(s, Router) for s in self.services)
        router = Router(settings=self.settings.with_overrides(router_id=f"r{routers + 1}"))
        self.services.append(router)
        self.tasks.append(asyncio.create_task(router.run()))
        await router.ready.wait()
        return router

    async def start_worker(self, worker_id: str) -> Worker:
        worker = Worker(settings=self.settings.with_overrides(worker_id=worker_id))
        self.services.append(worker)
        self.tasks.append(asyncio.create_task(worker.run()))
        await worker.ready.wait()
        return worker

    async def start_fleet(self, *workers: str) -> Harness:
        """A router and in-process workers, returning once every shard is consumed."""
        await self.start_router()
        for worker_id in workers:
            await self.start_worker(worker_id)
        await self.wait_all_shards(set(workers))
        return self

    def spawn_worker(self, worker_id: str) -> WorkerProcess:
        process = WorkerProcess(self.settings, worker_id, self.tmp / f"{worker_id}.log")
        self.processes.append(process)
        return process

    async def placement(self) -> dict[int, str]:
        assert self.fleet is not None
        status = await self.fleet.status()
        return {k: a.worker for k, a in status.shards.items()}

    async def wait_all_shards(self, workers: set[str], *, timeout: float = 15.0) -> None:
        """Wait until every shard is placed on one of `workers` and each of them owns some."""

        async def placed() -> bool:
            assert self.fleet is not None
            status = await self.fleet.status()
            owners = {a.worker for a in status.shards.values()}
            beats = {b.worker: set(b.shards) for b in status.workers}
            consuming = all(k in beats.get(a.worker, set()) for k, a in status.shards.items())
            return len(status.shards) == self.settings.shards and owners == workers and consuming

        await eventually(placed, timeout=timeout, what=f"shards placed on {sorted(workers)}")

    async def publish_raw(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        assert self.nc is not None
        await self.nc.jetstream().publish(subject, data, headers=headers)

    async def dead_letters(self, count: int) -> list[tuple[str, dict[str, str], bytes]]:
        """The first `count` dead letters of this fleet: (subject, headers, data)."""
        assert self.nc is not None
        sub = await self.nc.jetstream().subscribe(
            self.settings.subjects.dlq_all,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        out = []
        try:
            for _ in range(count):
                msg = await sub.next_msg(timeout=5)
                out.append((msg.subject, dict(msg.headers or {}), msg.data))
        finally:
            await sub.unsubscribe()
        return out

    async def history(self, sid: str, tenant: str = "acme") -> list[dict[str, Any]]:
        """The session's persisted message history, read straight from Redis."""
        key = RedisKeys(self.settings.redis_prefix).history(tenant, sid)
        raw = await self.redis.lrange(key, 0, -1)
        return [decode(item) for item in raw]

    async def state(self, sid: str, tenant: str = "acme") -> dict[str, Any]:
        """The session's persisted state, read straight from Redis ({} when there is none)."""
        raw = await self.redis.hget(RedisKeys(self.settings.redis_prefix).state(tenant, sid), "d")
        return decode(raw) if raw else {}

    async def scheduled(
        self, schedule: Callable[[int], str], sid: str, tenant: str = "acme"
    ) -> float | None:
        """When the session is due on a per-shard schedule (`RedisKeys.hibernation`,
        `.approval_timeouts`), whichever shard it is of; None when it is on none."""
        member = session_member(tenant, sid)
        for shard in range(self.settings.shards):
            score = await self.redis.zscore(schedule(shard), member)
            if score is not None:
                return float(score)
        return None

    async def close(self) -> None:
        for process in self.processes:
            process.stop()
        for service in reversed(self.services):
            await service.shutdown()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.fleet is not None:
            await self.fleet.close()
        if self.nc is not None:
            await self.nc.close()
        await self.redis.aclose()


def test_settings(nats_url: str, redis_url: str, **overrides: Any) -> Settings:
    prefix = f"t{secrets.token_hex(5)}"
    base = Settings(
        nats_url=nats_url,
        redis_url=redis_url,
        prefix=prefix,
        shards=4,
        metrics_port=None,
        heartbeat_interval_s=0.2,
        worker_timeout_s=1.5,
        handover_grace_s=2.0,
        sweep_interval_s=0.2,
        redis_cluster=REDIS_CLUSTER,
    )
    return base.with_overrides(**overrides)


@pytest.fixture
async def harness_factory(
    servers: tuple[str, str], tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Makes harnesses with a fresh subject and key prefix; closes them after the test."""
    created: list[Harness] = []

    async def make(**overrides: Any) -> Harness:
        settings = test_settings(**{"nats_url": servers[0], "redis_url": servers[1], **overrides})
        harness = Harness(settings, tmp_path)
        harness.nc = await connect_nats(settings, name="test")
        harness.fleet = await Fleet.connect(settings=settings, tenant="acme")
        created.append(harness)
        return harness

    yield make
    for harness in reversed(created):
        await harness.close()


@pytest.fixture
async def fleet(harness_factory: Callable[..., Awaitable[Harness]]) -> Harness:
    """A running fleet: one router and one in-process worker owning every shard."""
    harness = await harness_factory()
    return await harness.start_fleet("w1")


def decode(data: bytes | str) -> dict[str, Any]:
    value = orjson.loads(data)
    assert isinstance(value, dict)
    return value
