"""Secrets never leak: provider keys (a session's, a judge's, a sub-agent's, a switched
model's, a registry profile's), the tenant's HMAC secret and the gateway's API key go
through turns, a webhook, a checkpoint and audit records; then every message NATS carried,
every Redis key, the logs and the metrics are searched for them."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from collections.abc import Awaitable, Callable

import nats
import pytest
import redis.asyncio as aioredis
from nats.aio.msg import Msg
from prometheus_client import REGISTRY, generate_latest

from tests.conftest import Harness, eventually
from tests.engine_helpers import call
from tests.gateway.conftest import GatewayFactory
from tests.gateway.test_api_operations import Receiver

SECRETS = {
    name: f"{name}-{secrets.token_hex(12)}"
    for name in ("provider", "judge", "child", "switched", "registry", "tenant", "api")
}


async def _everything_in_redis(redis: aioredis.Redis) -> bytes:
    """Every value of every key, whatever its type."""
    seen: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        seen.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            seen.append(await redis.get(key) or b"")
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                seen += [field, value]
        elif kind == "list":
            seen += await redis.lrange(key, 0, -1)
        elif kind == "set":
            seen += list(await redis.smembers(key))
        elif kind == "zset":
            seen += await redis.zrange(key, 0, -1)
        elif kind == "stream":
            for _, fields in await redis.xrange(key):
                seen += [b for pair in fields.items() for b in pair]
    return b"\n".join(seen)


def _hits(haystack: bytes | str) -> list[str]:
    text = haystack.decode(errors="replace") if isinstance(haystack, bytes) else haystack
    return [name for name, value in SECRETS.items() if value in text]


async def test_secrets_appear_nowhere(
    harness_factory: Callable[..., Awaitable[Harness]],
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet_key = base64.b64encode(os.urandom(32)).decode()
    harness = await harness_factory(
        fleet_key=fleet_key,
        callback_allow=("127.0.0.1:*",),
        tenant_secrets=f"acme:{SECRETS['tenant']}",
    )
    spy: list[bytes] = []

    async def record(msg: Msg) -> None:
        spy.append(msg.subject.encode() + b" " + msg.data + repr(msg.headers).encode())

    watcher = await nats.connect(harness.settings.nats_url)
    await watcher.subscribe(">", cb=record)  # everything NATS carries, from the start
    await watcher.flush()
    await harness.start_fleet("w1")
    gateway = await gateway_factory(
        harness, api_keys=f"{SECRETS['api']}:acme", admin_keys=SECRETS["api"]
    )
    receiver = Receiver()
    await receiver.server.start()
    try:
        async with gateway.client(SECRETS["api"]) as http:
            put = await http.put(
                "/v1/providers/vault",
                json={"provider": "mock", "opts": {"api_key": SECRETS["registry"]}},
            )
            assert put.status_code == 200, put.text
            judge = {
                "judge_model": "mock:script",
                "judge_provider_opts": {"api_key": SECRETS["judge"], "script": [{"text": "ALLOW"}]},
                "check_prompts": True,
            }
            child = {
                "name": "helper",
                "model": "mock:script",
                "providerOpts": {"api_key": SECRETS["child"], "script": [{"text": "helped"}]},
            }
            steps = [
                {"tool_calls": [call("task", description="help", subagent_type="helper")]},
                {"tool_calls": [call("write_file", path="notes.txt", content="kept")]},
                {"text": "done"},
            ]
            created = await http.post(
                "/v1/sessions",
                json={
                    "model": "mock:script",
                    "sessionId": "leaky",
                    "tools": ["task", "write_file"],
                    "plugins": [{"name": "content_policy", "opts": judge}],
                    "subagents": [child],
                    "providerOpts": {"api_key": SECRETS["provider"], "script": steps},
                    "webhook": {"url": receiver.url("hook"), "events": ["agent_end"]},
                },
            )
            assert created.status_code == 201, created.text
            await http.post("/v1/sessions/leaky/prompt", json={"text": "please help me"})
            await eventually(lambda: len(receiver.bodies) >= 1, what="the webhook")
            await http.post(
                "/v1/sessions/leaky/model",
                json={"model": "mock:echo", "providerOpts": {"api_key": SECRETS["switched"]}},
            )
            await http.post("/v1/sessions/leaky/checkpoints", json={"label": "after"})

            async def checkpointed() -> bool:
                listed = (await http.get("/v1/sessions/leaky/checkpoints")).json()
                return bool(listed["checkpoints"])

            await eventually(checkpointed, what="the checkpoint")
            registry = await http.post(
                "/v1/sessions", json={"model": "registry:vault:echo", "sessionId": "vaulted"}
            )
            assert registry.status_code == 201, registry.text
            await http.post("/v1/sessions/vaulted/prompt", json={"text": "hi"})

            async def answered() -> bool:
                stats = (await http.get("/v1/sessions/vaulted/stats")).json()
                return bool(stats["turns"] == 1 and stats["totalTokens"])

            await eventually(answered, what="the registry turn")
            gateway_metrics = (await http.get("/metrics")).text
            messages = (await http.get("/v1/sessions/leaky/messages")).json()["messages"]
        assert any(m["role"] == "tool_result" and m["content"] == "helped" for m in messages)
        await watcher.flush()
        assert _hits(b"\n".join(spy)) == [], "a secret crossed NATS"
        assert len(spy) > 200
        assert _hits(await _everything_in_redis(harness.redis)) == [], "a secret is in Redis"
        assert _hits(caplog.text) == [], "a secret is in the logs"
        assert _hits(gateway_metrics + generate_latest(REGISTRY).decode()) == []
        assert SECRETS["tenant"] not in str(receiver.bodies)
    finally:
        await receiver.server.stop()
        await watcher.close()


def test_the_search_finds_a_secret_where_there_is_one() -> None:
    """The searches above are not blind."""
    assert _hits(f"x {SECRETS['judge']} y".encode()) == ["judge"]
    assert _hits({"k": SECRETS["api"]}.__repr__()) == ["api"]
