"""ShardIntake: consumes one shard of FLOTILLA_CMD with pull requests kept topped up.

The consumer is named after the shard and the owner epoch; taking a shard over deletes the
previous owner's consumer, so every unacknowledged command is redelivered in stream order
and a stale owner's acks and pulls fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from flotilla.settings import Settings
from workers._delivery import Delivery, parse_ack_reply
from workers._slots import SlotPool

log = logging.getLogger(__name__)

MAX_OUTSTANDING = 64
"""Most messages one shard asks for at once; each shard gets its fair share of the slots."""
PULL_EXPIRES_S = 10.0
IDLE_HEARTBEAT_S = 2.0
ERROR_BACKOFF_S = 0.5


def consumer_name(shard: int, epoch: int) -> str:
    return f"shard-{shard}-e{epoch}"


class ShardIntake:
    """Pulls commands of one shard into `dispatch` while this worker owns the shard."""

    def __init__(
        self,
        *,
        nc: NATS,
        js: JetStreamContext,
        settings: Settings,
        shard: int,
        epoch: int,
        slots: SlotPool,
        dispatch: Callable[[Delivery], None],
        share: Callable[[], int],
    ) -> None:
        self.shard = shard
        self.epoch = epoch
        self._nc = nc
        self._js = js
        self._settings = settings
        self._slots = slots
        self._dispatch = dispatch
        self._share = share
        self._subjects = settings.subjects
        self._consumer = consumer_name(shard, epoch)
        self._sub: Subscription | None = None
        self._outstanding = 0
        self._last_seen = time.monotonic()
        self._need = asyncio.Event()
        self._stopped = False
        self._backoff_until = 0.0

    async def prepare(self) -> None:
        """Replace any earlier owner's consumer of this shard by this epoch's."""
        stream = self._subjects.cmd_stream
        shard_filter = self._subjects.shard_filter(self.shard)
        for info in await self._js.consumers_info(stream):
            if info.config.filter_subject == shard_filter and info.name != self._consumer:
                with contextlib.suppress(NotFoundError):
                    await self._js.delete_consumer(stream, info.name)
        await self._js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=self._consumer,
                filter_subject=shard_filter,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self._settings.ack_wait_s,
                max_ack_pending=max(10_000, self._settings.worker_slots * 4),
                max_waiting=512,
            ),
        )

    async def run(self) -> None:
        """Keep pull requests topped up until `stop()`; slots are reserved before each pull."""
        inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(inbox, cb=self._on_message)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._subjects.cmd_stream}.{self._consumer}"
        try:
            while not self._stopped:
                if time.monotonic() - self._last_seen > 3 * IDLE_HEARTBEAT_S and self._outstanding:
                    self._slots.release(self._outstanding)  # the pull request was lost
                    self._outstanding = 0
                limit = self._share()
                want = limit - self._outstanding
                backoff = self._backoff_until - time.monotonic()
                if backoff > 0:  # the last pull failed: do not spin on a broken consumer
                    await asyncio.sleep(backoff)
                    continue
                if want > 0 and self._outstanding <= limit // 2:
                    if self._slots.free <= 0 and self._outstanding == 0:
                        await self._slots.wait_free()
                    taken = self._slots.reserve_up_to(want)
                    if taken:
                        self._outstanding += taken
                        self._last_seen = time.monotonic()
                        request = {
                            "batch": taken,
                            "expires": int(PULL_EXPIRES_S * 1e9),
                            "idle_heartbeat": int(IDLE_HEARTBEAT_S * 1e9),
                        }
                        await self._nc.publish(next_subject, orjson.dumps(request), reply=inbox)
                self._need.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_HEARTBEAT_S):
                        await self._need.wait()
        finally:
            await self._close()

    async def stop(self) -> None:
        """Stop asking for commands; those delivered keep their slots until settled."""
        self._stopped = True
        self._need.set()

    async def _close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._outstanding:
            self._slots.release(self._outstanding)
            self._outstanding = 0

    async def _on_message(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        headers = msg.headers
        if headers and "Status" in headers and not msg.reply:
            self._on_status(headers)
            return
        if self._stopped or self._sub is None:
            return  # redelivered to the next owner after the consumer is replaced
        if self._outstanding > 0:
            self._outstanding -= 1
        else:
            self._slots.reserve_up_to(1)  # an extra message from a request thought lost
        if self._outstanding <= self._share() // 2:
            self._need.set()
        seq, delivered = parse_ack_reply(msg.reply)
        parsed = self._subjects.parse_stored_cmd(msg.subject)
        tenant, sid, op = (parsed.tenant, parsed.sid, parsed.op) if parsed else ("_", "_", "_")
        self._dispatch(
            Delivery(
                msg=msg,
                seq=seq,
                delivered=delivered,
                shard=self.shard,
                tenant=tenant,
                sid=sid,
                op=op,
                release=self._release_one,
            )
        )

    def _release_one(self) -> None:
        self._slots.release(1)
        if self._outstanding <= self._share() // 2:
            self._need.set()

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":
            return  # idle heartbeat: the pull request is alive
        if status in ("404", "408"):
            # The request ended; the header says how many of its messages never came.
            pending = headers.get("Nats-Pending-Messages")
            remaining = (
                self._outstanding if pending is None else min(int(pending), self._outstanding)
            )
            self._outstanding -= remaining
            self._slots.release(remaining)
        else:  # 409 / 503: consumer deleted, leadership change, no responders...
            self._backoff_until = time.monotonic() + ERROR_BACKOFF_S
            log.info(
                "shard %d pull status %s %s", self.shard, status, headers.get("Description", "")
            )
            self._slots.release(self._outstanding)
            self._outstanding = 0
        self._need.set()
