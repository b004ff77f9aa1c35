"""agent_end is saved with the turn's end: never lost with a worker, never repeated by a move."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import Harness


async def test_an_agent_end_saved_but_not_published_is_published_on_the_next_load(
    fleet: Harness,
) -> None:
    assert fleet.fleet is not None
    session = await fleet.fleet.create_agent(model="mock:echo")
    hib = await session.hibernate()
    await session.wait_for({"session_hibernated"}, request_id=hib, timeout=5)
    # what a worker killed between saving the turn's end and publishing it leaves behind
    key = f"{fleet.settings.prefix}:s:{{acme.{session.sid}}}"
    state = orjson.loads(await fleet.redis.hget(key, "d"))
    state["unannounced"] = [
        {
            "type": "agent_end",
            "turn": 1,
            "request_id": "lost-1",
            "msg_id": "m-lost-1",
            "data": {
                "reason": "finished",
                "last_message": {"role": "assistant", "content": "x"},
                "usage": {},
            },
        }
    ]
    await fleet.redis.hset(key, "d", orjson.dumps(state))
    await session.prompt("wake")
    end = await session.wait_for({"agent_end"}, request_id="lost-1", timeout=5)
    assert end.turn == 1 and end.data["last_message"]["content"] == "x"
    assert await session.collect_reply(timeout=5) == "echo: wake"


async def test_a_session_moved_after_its_turn_does_not_repeat_agent_end(
    harness_factory: Any,
) -> None:
    harness: Harness = await harness_factory()
    await harness.start_router()
    w1 = await harness.start_worker("w1")
    await harness.wait_all_shards({"w1"})
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    first = await session.prompt("one")
    await session.collect_reply(timeout=5)
    await w1.shutdown()
    await harness.start_worker("w2")
    await harness.wait_all_shards({"w2"})
    second = await session.prompt("two")
    live_ends = []  # what a live subscriber sees after the move (the stream would dedupe)
    while not live_ends or live_ends[-1] != second:
        event = await session.wait_for({"agent_end"}, request_id=None, timeout=10)
        live_ends.append(event.request_id)
    assert live_ends == [second]
    assert first not in live_ends
