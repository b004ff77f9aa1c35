"""ShardIntake: consumes one shard of FLOTILLA_CMD with pull requests kept topped up.

The consumer is named after the shard and the owner epoch; taking a shard over deletes the
previous owners' consumers, so every unacknowledged command is redelivered in stream order
and a stale owner's acks and pulls fail. Ownership only moves forward: an intake never
deletes a consumer of a newer epoch (it finds itself `Superseded` instead), and an intake
whose consumer disappeared asks whether the shard is still its own before it makes its
consumer again — or lets the shard go, never looping on a deleted consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg
from nats.js.errors import NotFoundError

from flotilla.settings import Settings
from workers import _metrics
from workers._delivery import Delivery, parse_ack_reply
from workers._slots import SlotPool
from workers._stored import StoredCommands
from workers.errors import Superseded

log = logging.getLogger(__name__)

MAX_OUTSTANDING = 64
"""Most messages one shard asks for at once; each shard gets its fair share of the slots."""
PULL_EXPIRES_S = 10.0
IDLE_HEARTBEAT_S = 1.0
"""The consumer's sign of life while a pull waits; after three missed (the node serving the
pull died), the pull is taken for lost and asked again, of whichever node leads now."""
ERROR_BACKOFF_S = 0.5


RECOVER_AFTER = 3
"""Failed pulls in a row after which the intake checks on its consumer."""
SWEEP_AFTER_S = 2.0
"""How long after a sign of a lost delivery the intake looks for it (a new stream leader is
elected meanwhile), and how long between tries while the consumer cannot be read."""
ABANDONED_AFTER_S = 0.05
"""How soon a delivery set down unapplied (its session closed) is looked for again."""
SETTLE_S = 0.5
RECENT = 4096
"""Stream sequences of the latest deliveries remembered, to tell the lost from the received
(more than the commands one worker holds at once)."""
SUSPECT_MARGIN_S = 10.0
"""How long past `ack_wait` deliveries stay checked after a sign that one went missing: a
delivery lost in transit stays pending on the consumer until `ack_wait`, then comes again."""


def consumer_name(shard: int, epoch: int) -> str:
    return f"shard-{shard}-e{epoch}"


def consumer_epoch(name: str, shard: int) -> int | None:
    """The epoch in a consumer name of `shard` (None: not one of its consumers)."""
    head = f"shard-{shard}-e"
    if not name.startswith(head) or not name[len(head) :].isdigit():
        return None
    return int(name[len(head) :])


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
        still_mine: Callable[[int, int], Awaitable[bool]] | None = None,
        lost: Callable[[int, int], None] | None = None,
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
        self._failures = 0
        self._still_mine = still_mine
        """Whether the placement still gives (shard, epoch) to this worker."""
        self._lost = lost
        """Called when the shard turned out to be another owner's: the worker lets it go."""
        self._next_cseq: int | None = None
        """The consumer sequence the next delivery should carry (None: not known yet)."""
        self._suspect_until = 0.0
        """Until when deliveries are marked `check_order` (monotonic time)."""
        self._recent: dict[int, None] = {}
        """Stream sequences of the latest deliveries, oldest first."""
        self._sweep: asyncio.Task[None] | None = None
        self._stored = StoredCommands(nc, js, subjects=settings.subjects)
        self._sweep_again = False

    async def prepare(self) -> None:
        """Replace the earlier owners' consumers of this shard by this epoch's (one of this
        epoch's own name too: an earlier process of this worker made it); `Superseded` when a
        newer owner's consumer is there (never deleted)."""
        stream = self._subjects.cmd_stream
        shard_filter = self._subjects.shard_filter(self.shard)
        older = []
        for info in await self._js.consumers_info(stream):
            if info.config.filter_subject != shard_filter:
                continue
            if info.name == self._consumer:
                # left by an earlier process of this worker (restarted under the same id):
                # what it was sent and never acknowledged would come again only after
                # ack_wait, behind later commands; a new consumer sends it now, in order
                log.info(
                    "shard %d: consumer %s was an earlier process's (%d unacknowledged)",
                    self.shard,
                    info.name,
                    info.num_ack_pending or 0,
                )
                older.append(info.name)
                continue
            epoch = consumer_epoch(info.name, self.shard)
            if epoch is not None and epoch > self.epoch:
                raise Superseded(
                    f"shard {self.shard}: {info.name} is newer than epoch {self.epoch}"
                )
            older.append(info.name)
        for name in older:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(stream, name)
        await self._add_consumer()

    async def _add_consumer(self) -> None:
        await self._js.add_consumer(
            self._subjects.cmd_stream,
            ConsumerConfig(
                durable_name=self._consumer,
                filter_subject=self._subjects.shard_filter(self.shard),
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
                    self._suspect("lost_pull")  # and what it carried may be too
                limit = self._share()
                want = limit - self._outstanding
                backoff = self._backoff_until - time.monotonic()
                if backoff > 0:  # the last pull failed: do not spin on a broken consumer
                    self._need.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await self._need.wait()  # stop() wakes it
                    continue
                if self._failures >= RECOVER_AFTER and not await self._recover():
                    break
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

    async def _recover(self) -> bool:
        """After pulls failed in a row: make this epoch's consumer again if it is gone and
        the shard is still this worker's (True), or let the shard go (False)."""
        self._failures = 0
        stream = self._subjects.cmd_stream
        try:
            await self._js.consumer_info(stream, self._consumer)
            return True  # it exists: the failures were a leader change, retry as usual
        except NotFoundError:
            pass
        except Exception as exc:
            log.info("shard %d: consumer check failed (%r)", self.shard, exc)
            return True
        mine = self._still_mine is None or await self._still_mine(self.shard, self.epoch)
        if mine:
            try:
                await self.prepare()  # never deletes a newer owner's consumer
                log.warning(
                    "shard %d: consumer %s was gone; made again", self.shard, self._consumer
                )
                return True
            except Superseded:
                pass
            except Exception as exc:
                log.info("shard %d: consumer not made again yet (%r)", self.shard, exc)
                return True
        log.warning(
            "shard %d: consumer %s was deleted by a newer owner; letting the shard go",
            self.shard,
            self._consumer,
        )
        self._stopped = True
        if self._lost is not None:
            self._lost(self.shard, self.epoch)
        return False

    async def _close(self) -> None:
        self._stopped = True
        if self._sweep is not None:
            self._sweep.cancel()
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
        self._failures = 0
        if self._outstanding > 0:
            self._outstanding -= 1
        else:
            self._slots.reserve_up_to(1)  # an extra message from a request thought lost
        if self._outstanding <= self._share() // 2:
            self._need.set()
        seq, delivered, cseq = parse_ack_reply(msg.reply)
        if self._next_cseq is not None and cseq != self._next_cseq:
            self._suspect("sequence_gap")  # skipped: lost in transit; lower: a new leader
        self._next_cseq = cseq + 1
        self._remember(seq)
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
                check_order=time.monotonic() < self._suspect_until,
                abandoned=self._abandoned,
            )
        )

    def _remember(self, seq: int) -> None:
        self._recent[seq] = None
        if len(self._recent) > RECENT:
            del self._recent[next(iter(self._recent))]

    def _abandoned(self, seq: int) -> None:
        """A delivery was set down unapplied (its session let go in an outage): look for it
        again as for a lost one (not when the shard is being let go: its next owner will)."""
        if self._stopped:
            return
        self._recent.pop(seq, None)
        self._suspect("abandoned")

    def _suspect(self, reason: str) -> None:
        """A delivery may have been sent and lost. Look for it soon (`_find_lost`), and for
        a while have each session check the stream for an earlier command of its own before
        it applies the next one (a lost command found either way is applied in order)."""
        _metrics.INTAKE_SUSPECTS.labels(reason).inc()
        self._suspect_until = time.monotonic() + self._settings.ack_wait_s + SUSPECT_MARGIN_S
        if self._stopped:
            return
        if self._sweep is None or self._sweep.done():
            # a delivery set down is in the stream now; a lost one after the election
            after = ABANDONED_AFTER_S if reason == "abandoned" else SWEEP_AFTER_S
            self._sweep = asyncio.create_task(self._find_lost(after), name=f"sweep-{self.shard}")
        else:
            self._sweep_again = True  # a pass is under way: another one after it

    async def _find_lost(self, after: float) -> None:
        """Dispatch, from the stream, the commands the consumer sent and this intake never
        received; otherwise they would come again only after `ack_wait` — or sooner, with
        the session's next command, which may never be sent. Tried until the consumer can be
        read (an election may take a while), and once more if a new sign came meanwhile."""
        while not self._stopped:
            await asyncio.sleep(after)
            after = SWEEP_AFTER_S
            self._sweep_again = False
            try:  # read twice: what was on its way the first time has arrived by the second
                first = {m.seq for m in await self._unreceived()}
                await asyncio.sleep(SETTLE_S)
                stored = [m for m in await self._unreceived() if m.seq in first]
            except Exception as exc:  # a leader election still going on: try again
                log.info("shard %d: cannot look for lost deliveries yet (%r)", self.shard, exc)
                continue
            for message in stored:
                if self._stopped:
                    return
                if message.seq in self._recent:
                    continue  # received meanwhile
                missed = self._stored.delivery(message, self.shard)
                if missed is not None:
                    self._remember(missed.seq)
                    _metrics.COMMANDS_RECOVERED.inc()
                    log.warning(
                        "shard %d: command %d was sent and never received; applying it",
                        self.shard,
                        missed.seq,
                    )
                    self._dispatch(missed)
            if not self._sweep_again:
                return

    async def _unreceived(self) -> list[RawStreamMsg]:
        return await self._stored.unreceived(self._consumer, self.shard, self._recent)

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
            self._suspect("pull_failed")
            self._failures += 1
            self._backoff_until = time.monotonic() + ERROR_BACKOFF_S
            log.info(
                "shard %d pull status %s %s", self.shard, status, headers.get("Description", "")
            )
            self._slots.release(self._outstanding)
            self._outstanding = 0
        self._need.set()
