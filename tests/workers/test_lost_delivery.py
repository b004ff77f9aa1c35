"""A delivery lost in transit (a pull response gone with a node or a leader change): the
consumer takes the command for delivered and sends it again only after `ack_wait`, after the
session's later commands. The intake sees the gap in the consumer's sequence; the session then
applies the missing command from the stream first, in order, once (PROTOCOL §6.3)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from flotilla import Session
from tests.conftest import Harness, eventually
from workers._intake import ShardIntake


def _recovered() -> float:
    return REGISTRY.get_sample_value("flotilla_worker_commands_recovered_total") or 0.0


@pytest.fixture
def lose_first(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Drop, on its way into the intake, the first delivery whose body holds `LOSE-ME` (as
    if the network lost it): the broker and the consumer are real and know nothing of it."""
    dropped: list[str] = []
    receive = ShardIntake._on_message

    async def on_message(self: ShardIntake, msg: Msg) -> None:
        if not dropped and msg.reply and b"LOSE-ME" in msg.data:
            dropped.append(msg.subject)
            return
        await receive(self, msg)

    monkeypatch.setattr(ShardIntake, "_on_message", on_message)
    return dropped


async def _two_sessions(harness_factory: Any, **overrides: Any) -> tuple[Harness, Session, Session]:
    harness: Harness = await harness_factory(**overrides)
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    return (
        harness,
        await harness.fleet.create_agent(model="mock:echo"),
        await harness.fleet.create_agent(model="mock:echo"),
    )


async def test_a_lost_delivery_is_applied_from_the_stream_in_order_and_once(
    harness_factory: Any, lose_first: list[str]
) -> None:
    harness, session, other = await _two_sessions(harness_factory, ack_wait_s=2.0)
    recovered = _recovered()
    lost = await session.prompt("LOSE-ME")
    after = await session.prompt("after")
    untouched = await other.prompt("hello")
    ends = [await session.wait_for({"agent_end"}, request_id=None, timeout=10) for _ in range(2)]
    assert lose_first, "the fault was not injected"
    # in order: the later prompt did not overtake the lost one, which was not dropped
    assert [e.request_id for e in ends] == [lost, after]
    assert [e.data["last_message"]["content"] for e in ends] == ["echo: LOSE-ME", "echo: after"]
    assert _recovered() == recovered + 1
    await other.wait_for({"agent_end"}, request_id=untouched, timeout=10)
    # past ack_wait: nothing comes again (the stored copy was taken out of the work queue)
    js = harness.nc.jetstream()

    async def queue_empty() -> bool:
        info = await js.stream_info(harness.settings.subjects.cmd_stream)
        return info.state.messages == 0

    await eventually(queue_empty, timeout=10, what="the command stream to drain")
    again = await session.prompt("last")
    end = await session.wait_for({"agent_end"}, request_id=None, timeout=10)
    assert end.request_id == again  # no second agent_end of the lost prompt came before it
    history = await harness.history(session.sid)
    assert [m["content"] for m in history if m["role"] == "user"] == ["LOSE-ME", "after", "last"]


async def test_a_worker_restarted_under_its_id_gets_what_its_last_process_left_at_once(
    harness_factory: Any, lose_first: list[str]
) -> None:
    """The new process takes its shards at the same epoch; the consumer it finds was its
    predecessor's, which holds a command sent and never acknowledged. Reused, it would send
    that command only after `ack_wait` (30 s), behind the session's later commands."""
    harness: Harness = await harness_factory(shards=2)
    await harness.start_fleet("w1")
    assert harness.fleet is not None
    session = await harness.fleet.create_agent(model="mock:echo")
    lost = await session.prompt("LOSE-ME")
    await eventually(lambda: bool(lose_first), what="the delivery to be lost")
    crashed = harness.tasks[-1]
    crashed.cancel()  # the process dies: no release, its consumer stays as it was
    with contextlib.suppress(asyncio.CancelledError):
        await crashed
    await harness.start_worker("w1")
    after = await session.prompt("after")
    ends = [await session.wait_for({"agent_end"}, request_id=None, timeout=10) for _ in range(2)]
    assert [e.request_id for e in ends] == [lost, after]


async def test_a_lost_delivery_is_found_without_its_sessions_next_command(
    harness_factory: Any, lose_first: list[str]
) -> None:
    """Another session's delivery shows the gap; the intake finds the lost command in the
    stream within seconds, though its session sends nothing more (ack_wait is 30 s)."""
    _, session, other = await _two_sessions(harness_factory, shards=1)
    recovered = _recovered()
    lost = await session.prompt("LOSE-ME")
    await eventually(lambda: bool(lose_first), what="the delivery to be lost")
    await other.wait_for({"agent_end"}, request_id=await other.prompt("hello"), timeout=10)
    end = await session.wait_for({"agent_end"}, request_id=lost, timeout=10)
    assert end.data["last_message"]["content"] == "echo: LOSE-ME"
    assert _recovered() == recovered + 1


async def test_a_lost_create_is_applied_before_the_prompt_that_follows_it(
    harness_factory: Any, lose_first: list[str]
) -> None:
    """The session does not exist yet when its prompt arrives: the prompt looks for its
    session's earlier commands from the stream's start, finds the `create`, applies it."""
    _, _, other = await _two_sessions(harness_factory, shards=1)
    assert other.fleet is not None
    session = await other.fleet.session("late")
    await other.fleet.send("late", "create", {"model": "mock:echo", "system_prompt": "LOSE-ME"})
    await eventually(lambda: bool(lose_first), what="the create to be lost")
    await other.wait_for({"agent_end"}, request_id=await other.prompt("hello"), timeout=10)
    prompt = await session.prompt("first")
    end = await session.wait_for({"agent_end"}, request_id=prompt, timeout=10)
    assert end.data["last_message"]["content"] == "echo: first"
