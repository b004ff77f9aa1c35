"""FLOTILLA_CMD read directly, beside the intakes' consumers: the commands still in the work
queue that a consumer sent and a worker never received (a pull response lost with a node or
a leader change) or that a session set down unapplied, found so that they are applied in
order instead of after `ack_wait`, behind their session's later commands."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from schemas import Subjects
from workers._delivery import Delivery, MissedDelivery
from workers.errors import INFRASTRUCTURE

log = logging.getLogger(__name__)


class StoredCommands:
    def __init__(self, nc: NATS, js: JetStreamContext, *, subjects: Subjects) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects

    async def _next(self, subject: str, from_seq: int) -> RawStreamMsg | None:
        """The first stored command on `subject` (wildcards allowed) from `from_seq` on."""
        try:
            return await self._js.get_msg(
                self._subjects.cmd_stream, seq=from_seq, subject=subject, next=True
            )
        except NotFoundError:
            return None

    def delivery(self, stored: RawStreamMsg, shard: int) -> MissedDelivery | None:
        """A stored command as a delivery whose settling deletes it from the work queue
        (None: not a command subject)."""
        subjects = self._subjects
        parsed = subjects.parse_stored_cmd(stored.subject or "")
        if parsed is None or stored.seq is None:
            return None
        seq = stored.seq

        async def delete() -> None:
            await self._js.delete_msg(subjects.cmd_stream, seq)

        return MissedDelivery(
            msg=Msg(self._nc, stored.subject or "", "", stored.data or b"", stored.headers),
            seq=seq,
            delivered=1,
            shard=shard,
            tenant=parsed.tenant,
            sid=parsed.sid,
            op=parsed.op,
            release=lambda: None,
            delete=delete,
        )

    async def missed_before(self, delivery: Delivery, *, from_seq: int) -> MissedDelivery | None:
        """The first command of `delivery`'s session still in the work queue from `from_seq`
        on, if it is stored before `delivery`. Asked again while NATS does not answer (likely
        during the election that made the intake suspicious), the ack deadline pushed back."""
        subject = self._subjects.session_filter(delivery.shard, delivery.tenant, delivery.sid)
        pause = 0.05
        while True:
            try:
                stored = await self._next(subject, from_seq)
                break
            except INFRASTRUCTURE as exc:
                log.info("session %s: stream lookup failed (%r); asking again", delivery.sid, exc)
                await delivery.in_progress()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        if stored is None or stored.seq is None or stored.seq >= delivery.seq:
            return None
        return self.delivery(stored, delivery.shard)

    async def unreceived(
        self, consumer: str, shard: int, received: Container[int]
    ) -> list[RawStreamMsg]:
        """The commands `consumer` counts as delivered and unacknowledged that are not in
        `received`, in stream order."""
        stream = self._subjects.cmd_stream
        info = await self._js.consumer_info(stream, consumer)
        last = info.delivered.stream_seq or 0
        seq = (info.ack_floor.stream_seq or 0) + 1
        found = []
        while seq <= last:
            stored = await self._next(self._subjects.shard_filter(shard), seq)
            if stored is None or stored.seq is None or stored.seq > last:
                break
            seq = stored.seq + 1
            if stored.seq not in received:
                found.append(stored)
        return found
