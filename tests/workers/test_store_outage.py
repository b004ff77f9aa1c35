"""Redis going away and coming back: a command sent meanwhile is applied once, soon after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from flotilla.embedded import start_redis
from tests.conftest import Harness, eventually


def _retried() -> float:
    value = REGISTRY.get_sample_value(
        "flotilla_worker_commands_total", {"op": "prompt", "outcome": "retried"}
    )
    return value or 0.0


async def test_a_prompt_sent_while_redis_is_down_is_applied_once_it_is_back(
    harness_factory: Any, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis", persist=True)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    try:
        harness: Harness = await harness_factory(redis_url=server.url)
        await harness.start_fleet("w1")
        assert harness.fleet is not None
        session = await harness.fleet.create_agent(model="mock:echo")
        await session.prompt("before")
        await session.collect_reply(timeout=5)
        server.stop()
        retried = _retried()
        during = await session.prompt("during")
        await eventually(lambda: _retried() > retried, what="the worker to retry the prompt")
        server = start_redis(tmp_path / "redis", port=port, persist=True)
        assert await session.collect_reply(timeout=10) == "echo: during"
        marker = await session.prompt("after")
        ends = []
        while not ends or ends[-1] != marker:
            ends.append(
                (await session.wait_for({"agent_end"}, request_id=None, timeout=10)).request_id
            )
        assert ends == [marker]  # "during" ended exactly once, before
        assert during != marker
    finally:
        server.stop()
