"""Sealed provider keys: never in Redis, NATS payloads, events, logs or metrics."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.msg import Msg
from prometheus_client import generate_latest

from flotilla import Settings
from flotilla.runtime import FleetCipher, SecretError, open_opts, seal_opts
from schemas import ProviderProfile
from tests.conftest import Harness, eventually
from tests.registry.conftest import client_of, new_fleet_key, store_of
from workers import Worker

Factory = Callable[..., Awaitable[Harness]]


async def _redis_dump(harness: Harness) -> list[bytes]:
    """Every key and value of the Redis database, whatever its type."""
    redis = harness.redis
    dumped: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value: object = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1)
        else:
            value = await redis.xrange(key) if kind == "stream" else b""
        dumped.append(key + b" " + repr(value).encode())
    return dumped


async def test_a_sealed_key_never_appears_anywhere_it_could_leak(
    harness_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = await (await harness_factory(fleet_key=new_fleet_key())).start_fleet("w1")
    assert harness.nc is not None and harness.fleet is not None
    secret = f"sk-{secrets.token_hex(16)}"
    traffic: list[bytes] = []

    async def capture(msg: Msg) -> None:
        traffic.append(f"{msg.subject} {msg.headers}".encode() + b" " + msg.data)

    await harness.nc.subscribe(">", cb=capture)
    await harness.nc.flush()
    client = client_of(harness)
    profile = ProviderProfile(
        name="p1", provider="mock", opts={"api_key": secret, "x_token": secret}
    )
    revision = await client.register(profile)
    worker = harness.services[-1]
    assert isinstance(worker, Worker) and worker.registry is not None
    await worker.registry.wait_for(revision)
    session = await harness.fleet.create_agent(model="registry:p1:echo")
    await session.prompt("hello")
    assert await session.collect_reply() == "echo: hello"
    listed = await client.list()
    assert listed[0].opts == {"api_key": "***", "x_token": "***"}
    await client.register(profile.model_copy(update={"name": "p2"}))
    await client.unregister("p1")  # the audit record carries the profile it removed
    await eventually(lambda: any(b"agent_end" in m for m in traffic), what="the captured turn")

    redis = await _redis_dump(harness)
    logs = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    metrics = generate_latest().decode()
    # the scans saw what they should: the sealed request and profile, the turn, the metrics
    assert any(b"enc:v1:" in m for m in traffic) and any(b"enc:v1:" in v for v in redis)
    assert any(b"echo: hello" in v for v in redis) and logs and "flotilla_worker" in metrics
    assert not [m for m in traffic if secret.encode() in m]
    assert not [v for v in redis if secret.encode() in v]
    assert not [line for line in logs if secret in line]
    assert secret not in metrics


async def test_profiles_are_stored_sealed(harness_factory: Factory) -> None:
    harness = await harness_factory(fleet_key=new_fleet_key())
    await harness.start_router()
    await client_of(harness).register(
        ProviderProfile(name="p1", provider="openai", opts={"api_key": "sk-a", "base_url": "u"})
    )
    stored = await store_of(harness).get("p1")
    assert stored is not None and stored.opts["base_url"] == "u"
    cipher = FleetCipher.from_setting(harness.settings.fleet_key)
    assert open_opts(stored.opts, cipher, profile="p1") == {"api_key": "sk-a", "base_url": "u"}


def test_a_sealed_value_opens_only_for_its_profile_and_opt() -> None:
    cipher = FleetCipher(os.urandom(32))
    sealed = seal_opts({"api_key": "sk-a", "n": 1}, cipher, profile="p1")
    assert sealed["n"] == 1 and sealed["api_key"] != "sk-a"
    assert seal_opts(sealed, cipher, profile="p1") == sealed  # never sealed twice
    with pytest.raises(SecretError):
        open_opts(sealed, cipher, profile="p2")
    with pytest.raises(SecretError):
        open_opts({"other_key": sealed["api_key"]}, cipher, profile="p1")
    with pytest.raises(SecretError):
        open_opts(sealed, None, profile="p1")


def test_the_fleet_key_is_never_shown() -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings(fleet_key=key)
    assert key not in repr(settings) and key not in repr(FleetCipher.from_setting(key))
    short = base64.b64encode(b"x" * 16).decode()
    with pytest.raises(ValueError, match="32 bytes") as error:
        Settings.from_env({"FLOTILLA_FLEET_KEY": short})
    assert short not in str(error.value)
