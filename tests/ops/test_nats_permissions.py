"""ops/nats/tenant-permissions.conf on a real nats-server: a tenant's client works with its
own sessions and can neither reach another tenant nor publish what only the fleet sends."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NATS

from flotilla import Fleet, Settings
from flotilla.embedded import EmbeddedServer, start_nats
from flotilla.runtime import connect_nats
from tests.conftest import REDIS_CLUSTER, Harness, eventually

CONFIG = Path(__file__).parents[2] / "ops" / "nats" / "tenant-permissions.conf"
PASSWORDS = {name: secrets.token_hex(8) for name in ("FLEET", "ACME", "BETA")}


@pytest.fixture
async def guarded(
    tmp_path: Path, servers: tuple[str, str]
) -> AsyncIterator[tuple[EmbeddedServer, Harness]]:
    """A nats-server with the example's users, and a fleet that connects as `fleet`."""
    env = {f"{name}_PASSWORD": password for name, password in PASSWORDS.items()}
    server = start_nats(tmp_path, config=CONFIG, env=env)
    port = server.url.rpartition(":")[2]
    settings = Settings(
        nats_url=f"nats://fleet:{PASSWORDS['FLEET']}@127.0.0.1:{port}",
        redis_url=servers[1],
        redis_cluster=REDIS_CLUSTER,
        prefix="flotilla",  # the prefix the example's subjects name
        key_prefix=f"t{secrets.token_hex(5)}",
        shards=4,
        metrics_port=None,
    )
    harness = Harness(settings, tmp_path)
    harness.nc = await connect_nats(settings, name="test")
    harness.fleet = await Fleet.connect(settings=settings, tenant="acme")
    try:
        await harness.start_fleet("w1")
        yield server, harness
    finally:
        await harness.close()
        server.stop()


async def _client(server: EmbeddedServer, tenant: str, errors: list[str]) -> NATS:
    port = server.url.rpartition(":")[2]

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        f"nats://{tenant}:{PASSWORDS[tenant.upper()]}@127.0.0.1:{port}",
        inbox_prefix=f"_INBOX_{tenant}".encode(),
        error_cb=on_error,
    )


async def _command(
    nc: NATS, tenant: str, sid: str, op: str, *, timeout: float = 2.0, **body: Any
) -> None:
    await nc.jetstream().publish(
        f"flotilla.cmd.{tenant}.{sid}.{op}",
        orjson.dumps({"op": op, **body}),
        headers={"Nats-Msg-Id": secrets.token_hex(8)},
        timeout=timeout,
    )


async def test_a_tenant_client_runs_its_own_sessions(
    guarded: tuple[EmbeddedServer, Harness],
) -> None:
    server, _ = guarded
    errors: list[str] = []
    acme = await _client(server, "acme", errors)
    try:
        sub = await acme.subscribe("flotilla.evt.acme.*.s1.>")
        await _command(acme, "acme", "s1", "create", model="mock:echo")
        await _command(acme, "acme", "s1", "prompt", text="hello")
        async with asyncio.timeout(10):
            while (event := orjson.loads((await sub.next_msg(timeout=10)).data))[
                "type"
            ] != "agent_end":
                pass
        assert event["data"]["last_message"]["content"] == "echo: hello"
        assert errors == []
    finally:
        await acme.close()


async def test_fleet_only_subjects_and_other_tenants_are_refused_by_the_server(
    guarded: tuple[EmbeddedServer, Harness],
) -> None:
    server, harness = guarded
    errors: list[str] = []
    acme = await _client(server, "acme", errors)
    try:
        for tenant, op in (("acme", "subagent_result"), ("acme", "hibernate"), ("beta", "stop")):
            with pytest.raises(nats.errors.Error):
                await _command(acme, tenant, "s1", op, timeout=0.3)
        spy = await acme.subscribe("flotilla.evt.beta.>")
        registry = await acme.request("flotilla.registry.list", b"{}", timeout=2)
        assert orjson.loads(registry.data)["ok"] is True  # what a tenant may ask still works
        await acme.flush()

        def violations() -> list[str]:  # the server refuses asynchronously
            return [e for e in errors if "permissions violation" in e.lower()]

        await eventually(lambda: len(violations()) == 4, what="four refusals")
        assert any("flotilla.evt.beta.>" in e for e in violations())
        with pytest.raises(nats.errors.TimeoutError):
            await spy.next_msg(timeout=0.2)
        assert harness.nc is not None
        stream = await harness.nc.jetstream().stream_info("FLOTILLA_CMD")
        assert stream.state.messages == 0, "nothing reached the command stream"
    finally:
        await acme.close()
