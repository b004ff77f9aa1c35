"""The shared durable event consumer, against a real fleet (NATS JetStream and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from gateway._limits import Meter, usage_handler
from gateway._watch import watch_events
from schemas import Event
from tests.conftest import Harness, eventually

KEY = "0123456789abcdef"

DURABLE = "gw-test"

Handler = Callable[[Event], Awaitable[None]]


class Watchers:
    """Watchers sharing one durable (agent_end and session_created events)."""

    def __init__(self, fleet: Harness) -> None:
        assert fleet.nc is not None
        self.js = fleet.nc.jetstream()
        self.stream = fleet.settings.subjects.evt_stream
        self.prefix = fleet.settings.subjects.prefix
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self, handler: Handler, *, js: JetStreamContext | None = None) -> None:
        """Start a watcher and return once it waits on a pull request."""
        watcher = watch_events(
            js or self.js,
            stream=self.stream,
            durable=DURABLE,
            filter_subjects=[
                f"{self.prefix}.evt.*.*.*.progress.agent_end",
                f"{self.prefix}.evt.*.*.*.control.session_created",
            ],
            handler=handler,
            stop=self.stop,
        )
        self.tasks.append(asyncio.create_task(watcher))
        await eventually(self.all_pulling, timeout=2.0, what="the watchers' pull requests")

    async def info(self) -> ConsumerInfo:
        return await self.js.consumer_info(self.stream, DURABLE)

    async def all_pulling(self) -> bool:
        with contextlib.suppress(NotFoundError):
            return ((await self.info()).num_waiting or 0) >= len(self.tasks)
        return False

    async def settled(self) -> bool:
        """Every event delivered and acked."""
        info = await self.info()
        return info.num_pending == 0 and info.num_ack_pending == 0

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


@pytest.fixture
async def watchers(fleet: Harness) -> AsyncIterator[Watchers]:
    started = Watchers(fleet)
    yield started
    await started.close()


class NatsLink:
    """A TCP relay in front of nats-server whose connections a test can cut (fault injector)."""

    def __init__(self, target_url: str) -> None:
        host, _, port = target_url.removeprefix("nats://").rpartition(":")
        self._target = (host, int(port))
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


async def publish(fleet: Harness, sid: str, type_: str = "agent_end") -> int:
    """Publish one synthetic event as a worker would; returns its stream sequence."""
    assert fleet.nc is not None
    channel = "progress" if type_ == "agent_end" else "control"
    data: dict[str, Any] = (
        {"reason": "finished", "last_message": None, "usage": {}} if type_ == "agent_end" else {}
    )
    event = Event(type=type_, sid=sid, tenant="acme", ts=int(time.time() * 1000), data=data)
    subject = fleet.settings.subjects.evt("acme", None, sid, channel, type_)
    ack = await fleet.nc.jetstream().publish(subject, event.model_dump_json().encode())
    return int(ack.seq)


async def test_usage_of_a_turn_reaches_the_owners_meter(fleet: Harness, watchers: Watchers) -> None:
    assert fleet.fleet is not None
    meter = Meter(fleet.redis, key_prefix=fleet.settings.redis_prefix)
    owned: set[str] = set()

    async def owner_of(tenant: str, sid: str) -> str | None:
        return KEY if sid in owned else None

    await watchers.start(usage_handler(meter, owner_of))
    price = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
    session = await fleet.fleet.create_agent(model="mock:script", provider_opts={"price": price})
    owned.add(session.sid)
    await session.prompt("hello there")
    end = await session.wait_for({"agent_end"}, request_id=session.last_prompt_id, timeout=5)
    usage = end.data["usage"]
    assert usage["total_tokens"] > 0 and usage["cost_usd"] > 0

    async def metered() -> bool:
        return (await meter.usage(KEY))["tokens"] == usage["total_tokens"]

    await eventually(metered, timeout=2.0, what="the turn's tokens in the meter")
    assert (await meter.usage(KEY))["cost_usd"] == pytest.approx(usage["cost_usd"])
    await session.close()


async def test_events_of_unowned_sessions_are_not_metered(
    fleet: Harness, watchers: Watchers
) -> None:
    meter = Meter(fleet.redis, key_prefix=fleet.settings.redis_prefix)
    seen: list[int | None] = []

    async def nobody(tenant: str, sid: str) -> str | None:
        return None

    meter_usage = usage_handler(meter, nobody)

    async def handler(event: Event) -> None:
        await meter_usage(event)
        seen.append(event.seq)

    await watchers.start(handler)
    seq = await publish(fleet, "s1")
    await eventually(lambda: seen == [seq], timeout=2.0, what="the event")
    assert await meter.tracked_keys() == 0


async def test_watchers_sharing_a_durable_handle_each_event_once(
    fleet: Harness, watchers: Watchers
) -> None:
    handled: dict[str, list[int | None]] = {"a": [], "b": []}

    def recorder(name: str) -> Handler:
        async def record(event: Event) -> None:
            handled[name].append(event.seq)

        return record

    await watchers.start(recorder("a"))
    await watchers.start(recorder("b"))
    seqs = [await publish(fleet, f"s{i}") for i in range(20)]
    await eventually(watchers.settled, timeout=2.0, what="every event acked")
    assert Counter(handled["a"] + handled["b"]) == Counter(seqs)
    assert handled["a"] and handled["b"]  # both took part


async def test_a_failing_handler_gets_the_event_again(fleet: Harness, watchers: Watchers) -> None:
    calls: list[int | None] = []

    async def flaky(event: Event) -> None:
        calls.append(event.seq)
        if len(calls) == 1:
            raise RuntimeError("redis is down")

    await watchers.start(flaky)
    seq = await publish(fleet, "s1")
    await eventually(watchers.settled, timeout=2.0, what="the event acked")
    assert calls == [seq, seq]


async def test_a_message_that_is_not_an_event_is_skipped(
    fleet: Harness, watchers: Watchers
) -> None:
    seen: list[int | None] = []

    async def record(event: Event) -> None:
        seen.append(event.seq)

    await watchers.start(record)
    assert fleet.nc is not None
    subject = fleet.settings.subjects.evt("acme", None, "s1", "progress", "agent_end")
    await fleet.nc.jetstream().publish(subject, b"not json")
    seq = await publish(fleet, "s2")
    await eventually(lambda: seen == [seq], timeout=2.0, what="the valid event")


async def test_a_deleted_consumer_comes_back(fleet: Harness, watchers: Watchers) -> None:
    seen: list[int | None] = []

    async def record(event: Event) -> None:
        seen.append(event.seq)

    await watchers.start(record)
    await watchers.js.delete_consumer(watchers.stream, DURABLE)
    await eventually(watchers.all_pulling, timeout=2.0, what="the consumer again")
    seq = await publish(fleet, "s1")
    await eventually(lambda: seen == [seq], timeout=2.0, what="an event after")


async def test_stop_ends_the_watch_without_waiting_for_the_pull(watchers: Watchers) -> None:
    async def ignore(event: Event) -> None:
        return None

    await watchers.start(ignore)
    async with asyncio.timeout(0.2):  # a pull request lasts PULL_EXPIRES_S (10 s)
        await watchers.close()


async def test_the_watch_survives_a_nats_reconnect(fleet: Harness, watchers: Watchers) -> None:
    link = NatsLink(fleet.settings.nats_url)
    nc = await nats.connect(await link.start(), reconnect_time_wait=0.05)
    seen: list[int | None] = []

    async def record(event: Event) -> None:
        seen.append(event.seq)

    try:
        await watchers.start(record, js=nc.jetstream())
        first = await publish(fleet, "s1")
        await eventually(lambda: seen == [first], timeout=2.0, what="the first event")
        link.cut()
        await eventually(lambda: nc.stats["reconnects"] == 1 and nc.is_connected, timeout=2.0)
        second = await publish(fleet, "s2")
        await eventually(lambda: seen == [first, second], timeout=2.0, what="an event after")
    finally:
        await watchers.close()
        await nc.close()
        await link.close()


async def test_a_redelivered_agent_end_is_not_metered_twice(fleet: Harness) -> None:
    meter = Meter(fleet.redis, key_prefix=fleet.settings.redis_prefix)

    async def owner(tenant: str, sid: str) -> str | None:
        return KEY

    meter_usage = usage_handler(meter, owner)
    usage = {"total_tokens": 30, "cost_usd": 0.5}
    data = {"reason": "finished", "last_message": None, "usage": usage}
    end = Event(type="agent_end", sid="s1", tenant="acme", ts=1, data=data, seq=7)
    for _ in range(3):  # a handler that failed after counting gets the event again
        await meter_usage(end)
    await meter_usage(end.model_copy(update={"seq": 8}))  # another turn
    assert (await meter.usage(KEY))["tokens"] == 60
