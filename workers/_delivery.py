"""A command as delivered by JetStream, with the slot it holds until it is settled."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from prometheus_client import Counter

from schemas import COMMAND_OPS
from workers import _metrics

log = logging.getLogger(__name__)


def _command_counter(op: str, outcome: str) -> Counter:
    # ops come from subjects anyone may publish to: bound the label set
    return _labelled(op if op in COMMAND_OPS else "unknown", outcome)


@functools.cache
def _labelled(op: str, outcome: str) -> Counter:
    """The labelled child, resolved once per (op, outcome) instead of once per command."""
    return _metrics.COMMANDS.labels(op, outcome)


def parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """(stream sequence, delivery count, consumer sequence) from a JetStream ack subject, v1
    or v2 format."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[4]), int(tokens[6])
    # $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<x>]
    return int(tokens[7]), int(tokens[6]), int(tokens[8])


@dataclass(slots=True, eq=False)
class Delivery:
    msg: Msg
    seq: int
    delivered: int
    shard: int
    tenant: str
    sid: str
    op: str
    release: Callable[[], None]
    received: float = field(default_factory=time.perf_counter)
    settled: bool = False
    check_order: bool = False
    """The intake saw signs that a delivery of its shard went missing (a gap in the
    consumer's sequence, a lost pull, a leader change): the session looks in the stream for
    an earlier command of its own before it applies this one."""
    abandoned: Callable[[int], None] | None = None
    """Tells the intake that this delivery (its stream sequence) was left unacknowledged."""

    async def ack(self, op: str, outcome: str = "applied") -> None:
        """The command took effect (or was a duplicate): remove it from the work queue."""
        await self._settle(b"+ACK", op, outcome)

    async def term(self, op: str, outcome: str) -> None:
        """Poison input, already dead-lettered: never redeliver."""
        await self._settle(b"+TERM", op, outcome)

    async def in_progress(self) -> None:
        """Still working on it: push the ack deadline back (best effort, NATS may be down)."""
        if not self.settled:
            with contextlib.suppress(Exception):
                await self.msg._client.publish(self.msg.reply, b"+WPI")

    def abandon(self) -> None:
        """Leave the message unacknowledged (shard lost, or the session let go in an
        outage): the next owner gets it again, or this intake after `ack_wait` — by then
        the session's later commands check the stream for it (`check_order`)."""
        if not self.settled:
            self.settled = True
            self.release()
            if self.abandoned is not None:
                self.abandoned(self.seq)

    async def _settle(self, body: bytes, op: str, outcome: str) -> None:
        if self.settled:
            return
        self.settled = True
        try:
            await self.msg._client.publish(self.msg.reply, body)
        finally:
            self.release()
            _command_counter(op, outcome).inc()
            _metrics.COMMAND_SECONDS.observe(time.perf_counter() - self.received)


@dataclass(slots=True, eq=False)
class MissedDelivery(Delivery):
    """A command the consumer sent but this worker never received (its pull response was
    lost with a node or a leader change), read from the stream so that the session applies
    it in order, before the later command that revealed it.

    Settling it deletes it from the work queue. Its own delivery, if it still comes (the
    consumer sends it again after `ack_wait`), is then a duplicate of what was applied."""

    delete: Callable[[], Awaitable[object]] | None = None

    async def in_progress(self) -> None:
        return  # no ack deadline: the consumer does not know it was received

    async def _settle(self, body: bytes, op: str, outcome: str) -> None:
        if self.settled:
            return
        self.settled = True
        _command_counter(op, outcome).inc()
        if self.delete is not None:
            try:
                await self.delete()
            except Exception as exc:  # its redelivery is then acked as a duplicate
                log.info("command %d stays in the stream until redelivered (%r)", self.seq, exc)
