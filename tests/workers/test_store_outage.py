"""Redis going away and coming back: a command sent meanwhile is applied once, soon after."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from prometheus_client import REGISTRY

from flotilla.embedded import free_port, start_redis
from flotilla.errors import UnavailableError
from flotilla.runtime import patiently
from tests.conftest import Harness, OwnRedis, eventually


def _retried() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_command_retries_total") or 0.0


def _deferred() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_resumes_deferred_total") or 0.0


async def test_a_prompt_sent_while_redis_is_down_is_applied_once_it_is_back(
    harness_factory: Any, own_redis: OwnRedis
) -> None:
    harness: Harness = await harness_factory(redis_url=own_redis.url, redis_cluster=False)
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    await session.prompt("before")
    await session.collect_reply(timeout=5)
    own_redis.stop()
    retried = _retried()
    during = [await session.prompt(f"during {i}") for i in range(5)]
    await eventually(lambda: _retried() > retried, what="the worker to retry the prompt")
    own_redis.start()
    marker = await session.prompt("after")  # new, while the others wait to be retried
    ends = []
    while not ends or ends[-1][0] != marker:
        event = await session.wait_for({"agent_end"}, request_id=None, timeout=10)
        ends.append((event.request_id, event.data["last_message"]["content"]))
    # in order, each once: "after" applied first would make them duplicates (lost)
    assert ends == [
        *((rid, f"echo: during {i}") for i, rid in enumerate(during)),
        (marker, "echo: after"),
    ]
    history = await harness.history(session.sid)
    texts = [m["content"] for m in history if m["role"] == "user"]
    assert texts == ["before", *(f"during {i}" for i in range(5)), "after"]


async def test_turns_running_through_a_redis_outage_finish_by_themselves(
    harness_factory: Any, own_redis: OwnRedis
) -> None:
    harness: Harness = await harness_factory(redis_url=own_redis.url, redis_cluster=False)
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    script = {"script": [{"text": "slow", "delay_ms": 400}] * 3}
    sessions = [
        await harness.fleet.create_agent(model="mock:script", provider_opts=script)
        for _ in range(12)
    ]
    prompts = [await s.prompt("go") for s in sessions]
    for session, prompt_id in zip(sessions, prompts, strict=True):
        await session.wait_for({"agent_start"}, request_id=prompt_id, timeout=10)
    deferred = _deferred()
    own_redis.stop()  # every turn meets the outage at its next save
    down_since = time.monotonic()
    await eventually(
        lambda: _deferred() > deferred,
        timeout=10,
        what="a resumption to be put off",
    )
    # a 10 s outage (PROTOCOL §6.10): many resumption attempts meet it
    await asyncio.sleep(10 - (time.monotonic() - down_since))
    own_redis.start()
    for session, prompt_id in zip(sessions, prompts, strict=True):  # no further command
        end = await session.wait_for({"agent_end"}, request_id=prompt_id, timeout=30)
        assert end.data["reason"] == "finished"
    states = [await harness.state(s.sid) for s in sessions]
    assert all(state["current"] is None for state in states)


async def test_a_worker_started_while_redis_is_down_waits_for_it(
    harness_factory: Any, tmp_path: Path
) -> None:
    port = free_port()
    harness: Harness = await harness_factory(
        redis_url=f"redis://127.0.0.1:{port}/0", redis_cluster=False
    )
    worker = harness.spawn_worker("p1")  # Redis down: it waits, it does not die
    await asyncio.sleep(2.0)
    assert worker.process.poll() is None
    server = start_redis(tmp_path / "redis", port=port, persist=False)
    try:
        await harness.start_router()
        await harness.wait_all_shards({"p1"}, timeout=30)
        log = (harness.tmp / "p1.log").read_text()
        assert "Redis: ConnectionError" in log and "trying again" in log
        assert "Traceback" not in log
    finally:
        server.stop()


async def test_a_start_up_step_gives_up_with_a_clear_error_and_never_retries_a_bug() -> None:
    async def no_answer() -> None:
        raise nats.errors.TimeoutError

    with pytest.raises(UnavailableError, match=r"JetStream did not answer within 0\.5 s"):
        await patiently(no_answer, "JetStream", patience=0.5)
    calls = 0

    async def bug() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await patiently(bug, "JetStream", patience=10)
    assert calls == 1
