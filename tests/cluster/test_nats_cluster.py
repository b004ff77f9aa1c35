"""The fleet on a 3-node JetStream cluster (PROTOCOL §9): every node's URL in
`FLOTILLA_NATS_URL`, `FLOTILLA_REPLICAS` on every stream and bucket, raised in place and never
lowered, and a clear error when the cluster is too small."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from flotilla import Fleet, Settings
from flotilla.embedded import EmbeddedCluster, start_nats_cluster
from flotilla.errors import ConfigurationError
from flotilla.runtime import connect_nats, provision, stream_configs, wait_for_jetstream
from tests.conftest import Harness, eventually
from tests.conftest import test_settings as fleet_settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    started = start_nats_cluster(tmp_path_factory.mktemp("cluster"), nodes=3)
    try:
        yield started
    finally:
        started.stop()


def _settings(cluster: EmbeddedCluster, redis_url: str, **overrides: Any) -> Settings:
    return fleet_settings(cluster.url, redis_url, **overrides)


@pytest.fixture
async def js_of(cluster: EmbeddedCluster) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats.connect(servers=cluster.url.split(","))
    await wait_for_jetstream(nc.jetstream(), timeout=60)
    yield nc.jetstream()
    await nc.close()


async def _replicas(js: nats.js.JetStreamContext, settings: Settings) -> dict[str, int]:
    subjects = settings.subjects
    names = [str(c.name) for c in stream_configs(settings)] + [
        f"KV_{bucket}"
        for bucket in (
            subjects.workers_bucket,
            subjects.placement_bucket,
            subjects.router_bucket,
            subjects.tools_bucket,
        )
    ]
    return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in names}


async def test_a_fleet_runs_on_every_node_url_with_three_replicas(
    cluster: EmbeddedCluster,
    js_of: nats.js.JetStreamContext,
    servers: tuple[str, str],
    tmp_path: Path,
) -> None:
    settings = _settings(cluster, servers[1], replicas=3)
    assert "," in settings.nats_url
    harness = Harness(settings, tmp_path)
    harness.nc = await connect_nats(settings, name="test")
    harness.fleet = await Fleet.connect(settings=settings, tenant="acme")
    try:
        await harness.start_fleet("w1")
        session = await harness.fleet.create_agent(model="mock:echo")
        await session.prompt("hello cluster")
        assert await session.collect_reply(timeout=10) == "echo: hello cluster"
        assert set((await _replicas(js_of, settings)).values()) == {3}
    finally:
        await harness.close()


async def test_replicas_raise_an_r1_stream_in_place_and_keep_its_messages(
    cluster: EmbeddedCluster, js_of: nats.js.JetStreamContext, servers: tuple[str, str]
) -> None:
    settings = _settings(cluster, servers[1])
    await provision(js_of, settings)
    events = settings.subjects.evt_stream
    await js_of.publish(f"{settings.prefix}.evt.acme._.s1.control.session_created", b"{}")
    assert set((await _replicas(js_of, settings)).values()) == {1}
    await provision(js_of, settings.with_overrides(replicas=3))
    assert set((await _replicas(js_of, settings)).values()) == {3}
    assert (await js_of.stream_info(events)).state.messages == 1


async def test_replicas_never_lower_a_stream(
    cluster: EmbeddedCluster,
    js_of: nats.js.JetStreamContext,
    servers: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(cluster, servers[1], replicas=3)
    await provision(js_of, settings)
    with caplog.at_level(logging.WARNING, logger="flotilla._provision"):
        await provision(js_of, settings.with_overrides(replicas=1))
    assert set((await _replicas(js_of, settings)).values()) == {3}
    warned = [r.getMessage() for r in caplog.records]
    assert f"{settings.subjects.cmd_stream} has 3 replicas; FLOTILLA_REPLICAS=1 never lowers" in (
        " ".join(warned)
    )


async def test_more_replicas_than_nodes_is_a_clear_start_up_error(
    cluster: EmbeddedCluster, js_of: nats.js.JetStreamContext, servers: tuple[str, str]
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        await provision(js_of, _settings(cluster, servers[1], replicas=5))
    assert "FLOTILLA_REPLICAS=5 needs a NATS cluster with at least 5 JetStream nodes" in str(
        refused.value
    )


async def test_replicas_on_a_single_server_is_a_clear_start_up_error(
    servers: tuple[str, str],
) -> None:
    settings = Settings(
        nats_url=servers[0], redis_url=servers[1], prefix=f"c{secrets.token_hex(4)}", replicas=3
    )
    nc = await connect_nats(settings, name="test")
    try:
        with pytest.raises(ConfigurationError, match="needs a NATS cluster with at least 3"):
            await provision(nc.jetstream(), settings)
    finally:
        await nc.close()


async def test_flotilla_up_starts_a_three_node_cluster(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOTILLA_", "GATEWAY_"))}
    env["FLOTILLA_DATA_DIR"] = str(tmp_path / "data")
    args = ["up", "--nats-nodes", "3", "--workers", "1", "--no-gateway"]
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flotilla",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert up.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not lines or not lines[-1].startswith("Ctrl-C stops everything"):
                line = (await up.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        nats_url = next(line for line in lines if line.startswith("NATS:")).split()[1]
        redis_url = next(line for line in lines if line.startswith("Redis:")).split()[1]
        assert nats_url.count("nats://") == 3
        settings = Settings(nats_url=nats_url, redis_url=redis_url, replicas=3)
        async with await Fleet.connect(settings=settings, tenant="acme") as fleet:
            js = fleet.nc.jetstream()

            async def provisioned() -> bool:
                try:
                    await js.stream_info(settings.subjects.cmd_stream)
                except nats.errors.Error:
                    return False
                return True

            await eventually(provisioned, timeout=30, what="the command stream")
            info = await js.stream_info(settings.subjects.cmd_stream)
            assert info.config.num_replicas == 3
            # answered once the worker consumes the session's shard (64 R3 consumers to make)
            session = await fleet.create_agent(model="mock:echo", timeout=60)
            await session.prompt("hi")
            assert await session.collect_reply(timeout=20) == "echo: hi"
    finally:
        up.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await up.wait()
        except TimeoutError:
            up.kill()
    assert up.returncode == 0
