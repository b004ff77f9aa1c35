"""A command as delivered by JetStream, with the slot it holds until it is settled."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from prometheus_client import Counter

from schemas import COMMAND_OPS
from workers import _metrics


def _command_counter(op: str, outcome: str) -> Counter:
    # ops come from subjects anyone may publish to: bound the label set
    return _labelled(op if op in COMMAND_OPS else "unknown", outcome)


@functools.cache
def _labelled(op: str, outcome: str) -> Counter:
    """The labelled child, resolved once per (op, outcome) instead of once per command."""
    return _metrics.COMMANDS.labels(op, outcome)


def parse_ack_reply(reply: str) -> tuple[int, int]:
    """(stream sequence, delivery count) from a JetStream ack subject, v1 or v2 format."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[4])
    # $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<x>]
    return int(tokens[7]), int(tokens[6])


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

    async def ack(self, op: str, outcome: str = "applied") -> None:
        """The command took effect (or was a duplicate): remove it from the work queue."""
        await self._settle(b"+ACK", op, outcome)

    async def term(self, op: str, outcome: str) -> None:
        """Poison input, already dead-lettered: never redeliver."""
        await self._settle(b"+TERM", op, outcome)

    async def nak(self, delay_s: float) -> None:
        """Infrastructure trouble: redeliver after `delay_s`."""
        await self._settle(b'-NAK {"delay": %d}' % int(delay_s * 1e9), self.op, "retried")

    def abandon(self) -> None:
        """Leave the message unacknowledged (shard lost): the next owner gets it again."""
        if not self.settled:
            self.settled = True
            self.release()

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
