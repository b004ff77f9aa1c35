"""Worker: joins the fleet, consumes the shards placed on it, hosts session actors.

Shutdown sequence (SIGTERM, or `shutdown()`), each step bounded by the handover grace:
stop intake of every shard → let resident actors reach a step boundary → cancel what is left
(its state is at the last persisted boundary; the next owner resumes it) → release shards and
leave the membership → close the store, Redis and NATS in reverse order of opening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import start_http_server

from flotilla.audit import AuditPublisher
from flotilla.errors import ConfigurationError
from flotilla.placement import RELEASED_KEY, SHARD_KEY, Assignment, Heartbeat, parse_key
from flotilla.registry import ProviderRegistryCopy, build_resolver
from flotilla.runtime import (
    FleetCipher,
    connect_nats,
    connect_redis,
    ensure_bucket,
    patiently,
    provision,
    publish_retrying,
    watch_kv,
)
from flotilla.settings import Settings
from workers import _metrics
from workers._actor import RESUME, SessionActor, Written
from workers._budgets import BudgetMeter
from workers._context import DeadLetterRequest, WorkerContext
from workers._delivery import Delivery
from workers._events import EventPublisher, now_ms
from workers._handover import PreviousOwner
from workers._intake import MAX_OUTSTANDING, ShardIntake
from workers._mock import MockLLM
from workers._outbox import CommandPublisher
from workers._registry_llm import RegistryLLM
from workers._sessions import Blueprints
from workers._slots import SlotPool
from workers._store import SessionStore
from workers._stored import StoredCommands
from workers._toolbox import Toolbox
from workers.errors import StoreUnavailable, Superseded
from workers.tools import ToolCatalog
from workers.tools._external import ExternalToolDirectory

log = logging.getLogger(__name__)

TAKE_RETRY_FIRST_S = 0.2
TAKE_RETRY_CAP_S = 5.0
WRITTEN_KEPT_S = 600.0
"""How long the last write of a session an outage stopped is kept for its next actor (which
writes it again if Redis lost it); a session not resumed by then has left the worker."""
_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


@dataclass
class _OwnedShard:
    shard: int
    epoch: int
    intake: ShardIntake
    task: asyncio.Task[None]


class Worker:
    """One worker process of the fleet. `run()` until `shutdown()` (idempotent)."""

    def __init__(self, *, settings: Settings) -> None:
        if not _KV_KEY.match(settings.worker_id):
            raise ConfigurationError(
                f"worker id {settings.worker_id!r} must match {_KV_KEY.pattern}"
            )
        self.settings = settings
        self.worker_id = settings.worker_id
        self._subjects = settings.subjects
        self._slots = SlotPool(settings.worker_slots)
        self._shards: dict[int, _OwnedShard] = {}
        self._pending_take: dict[int, asyncio.Task[None]] = {}
        self._taking: dict[int, int] = {}
        """The epoch each pending take is for."""
        self._releasing: dict[int, asyncio.Task[None]] = {}
        """Shards being let go, by shard: a later take of the same shard waits for it."""
        self._released: dict[int, int] = {}
        self._released_changed = asyncio.Event()
        self._actors: dict[tuple[str, str], tuple[SessionActor, asyncio.Task[None]]] = {}
        """Resident sessions by (tenant, sid): session ids are chosen per tenant."""
        self._to_resume: dict[tuple[str, str], tuple[int, int]] = {}
        self._written: dict[tuple[str, str], tuple[Written, float]] = {}
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started_ms = now_ms()
        self._metrics_url: str | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._placement: KeyValue | None = None
        self._workers_kv: KeyValue | None = None
        self._ctx: WorkerContext | None = None
        self._external: ExternalToolDirectory | None = None
        self._registry: ProviderRegistryCopy | None = None
        self.ready = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        settings = self.settings
        nc = self._nc = await connect_nats(settings, name=f"worker {self.worker_id}")
        js = self._js = nc.jetstream()
        await patiently(lambda: provision(js, settings), "JetStream")
        redis = connect_redis(settings)
        store = SessionStore(
            redis,
            key_prefix=settings.redis_prefix,
            wait_replicas=settings.wait_replicas,
            wait_timeout_s=settings.redis_wait_timeout_s,
        )
        await patiently(store.start, "Redis")
        external = self._external = ExternalToolDirectory(nc, subjects=self._subjects)
        await external.start()
        resolver = build_resolver(settings)
        registry = self._registry = ProviderRegistryCopy(
            nc,
            redis,
            subjects=self._subjects,
            key_prefix=settings.redis_prefix,
            resync_s=settings.registry_resync_s,
            on_change=resolver.forget,
            on_reload=lambda cause: _metrics.REGISTRY_RELOADS.labels(cause).inc(),
        )
        await patiently(registry.start, "the provider registry (Redis)")
        self._ctx = WorkerContext(
            settings=settings,
            store=store,
            mock=MockLLM(),
            events=EventPublisher(
                nc,
                subjects=self._subjects,
                worker_id=self.worker_id,
                acknowledged=settings.replicas > 1,
            ),
            commands=CommandPublisher(js, subjects=self._subjects),
            stored=StoredCommands(nc, js, subjects=self._subjects),
            dead_letter=self._dead_letter,
            tools=Toolbox(settings=settings, catalog=ToolCatalog(settings), external=external),
            blueprints=Blueprints(settings.blueprints),
            audit=AuditPublisher(nc, subjects=self._subjects, enabled=settings.audit_enabled),
            cipher=FleetCipher.from_setting(settings.fleet_key),
        )
        await self._ctx.events.capture.start()
        self._ctx.registry = RegistryLLM(
            registry=registry,
            resolver=resolver,
            budgets=BudgetMeter(redis, key_prefix=settings.redis_prefix),
            providers=self._ctx.provider_llm,
        )
        replicas = settings.replicas
        workers_kv = await patiently(
            lambda: ensure_bucket(js, self._subjects.workers_bucket, ttl=60.0, replicas=replicas),
            "JetStream",
        )
        self._workers_kv = workers_kv
        self._placement = await patiently(
            lambda: ensure_bucket(js, self._subjects.placement_bucket, replicas=replicas),
            "JetStream",
        )
        self._start_metrics()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat(workers_kv), name="heartbeat")
                group.create_task(self._watch_placement(), name="placement")
                group.create_task(self._maintain(), name="maintenance")
                self.ready.set()
                await self._stopping.wait()
                await self._drain()
                with contextlib.suppress(Exception):
                    await workers_kv.delete(self.worker_id)
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self._close_all(store, redis, nc)
            self._stopped.set()

    async def shutdown(self) -> None:
        """Ask the worker to stop; returns once it has."""
        self._stopping.set()
        if self._nc is not None:
            await self._stopped.wait()

    @property
    def registry(self) -> ProviderRegistryCopy | None:
        """This worker's copy of the provider registry (None until `run()` started it)."""
        return self._registry

    async def _close_all(self, store: SessionStore, redis: object, nc: NATS) -> None:
        for owned in list(self._shards.values()):
            owned.task.cancel()
        for task in self._pending_take.values():
            task.cancel()
        await asyncio.gather(*self._releasing.values(), return_exceptions=True)
        for _, task in list(self._actors.values()):
            task.cancel()
        await asyncio.gather(
            *(o.task for o in self._shards.values()),
            *self._pending_take.values(),
            *(t for _, t in self._actors.values()),
            return_exceptions=True,
        )
        if self._registry is not None:
            await self._registry.close()
        if self._external is not None:
            await self._external.close()
        await store.close()
        if self._ctx is not None:  # what is not stored yet goes out before the connection
            await self._ctx.events.capture.close()
        with contextlib.suppress(Exception):
            await redis.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            await nc.drain()

    async def _drain(self) -> None:
        log.info("worker %s draining %d shards", self.worker_id, len(self._shards))
        # in parallel: shutdown takes at most one handover grace, whatever the shard count
        await asyncio.gather(*(self._release(shard, announce=True) for shard in list(self._shards)))

    def _start_metrics(self) -> None:
        port = self.settings.metrics_port
        if port is None:
            return
        server, _ = start_http_server(port, addr=self.settings.metrics_host)
        self._metrics_url = f"http://{self.settings.metrics_host}:{server.server_port}/metrics"

    # -- membership --------------------------------------------------------------------------
    async def _heartbeat(self, kv: KeyValue) -> None:
        while not self._stopping.is_set():
            beat = Heartbeat(
                worker=self.worker_id,
                started_ms=self._started_ms,
                ts_ms=now_ms(),
                slots_free=self._slots.free,
                resident=len(self._actors),
                shards=tuple(sorted(self._shards)),
                metrics_url=self._metrics_url,
                moving=tuple(
                    sorted(
                        {
                            *self._releasing,
                            *(k for k, t in self._pending_take.items() if not t.done()),
                        }
                    )
                ),
            )
            try:
                await kv.put(self.worker_id, beat.encode())
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            _metrics.RESIDENT.set(len(self._actors))
            _metrics.SHARDS_OWNED.set(len(self._shards))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_interval_s):
                    await self._stopping.wait()

    async def _watch_placement(self) -> None:
        assert self._placement is not None
        await watch_kv(
            self._placement,
            self._on_placement,
            stopping=self._stopping,
            what=f"worker {self.worker_id}: placement",
            restarted=_metrics.WATCH_RESTARTS.inc,
        )

    def _on_placement(self, entry: KeyValue.Entry) -> None:
        parsed = parse_key(entry.key)
        if self._stopping.is_set() or parsed is None or not entry.value:
            return
        kind, shard = parsed
        if kind == "released":
            epoch = int(orjson.loads(entry.value)["epoch"])
            self._released[shard] = max(epoch, self._released.get(shard, 0))
            self._released_changed.set()
            return
        self._on_assignment(Assignment.decode(shard, entry.value))

    def _on_assignment(self, assignment: Assignment) -> None:
        """Follow one placement entry. Never waits: letting go of a shard and taking one
        run as tasks, so a worker that loses 20 shards lets go of them all at once."""
        shard = assignment.shard
        owned = self._shards.get(shard)
        mine = assignment.worker == self.worker_id
        if mine and owned is not None and owned.epoch >= assignment.epoch:
            return
        taking = self._pending_take.get(shard)
        if (
            mine
            and taking is not None
            and not taking.done()
            and self._taking[shard] == assignment.epoch
        ):
            return  # seen again (a watch made again replays the bucket): being taken
        pending = self._pending_take.pop(shard, None)
        if pending is not None:
            pending.cancel()
        if owned is not None:
            self._let_go(shard, announce=not mine)
        if mine:
            self._taking[shard] = assignment.epoch
            self._pending_take[shard] = asyncio.create_task(
                self._take(assignment), name=f"take-shard-{shard}"
            )

    async def _take(self, assignment: Assignment) -> None:
        """Wait (bounded) for the previous owner to let go, then consume the shard.

        Starting to consume needs JetStream and Redis; while either fails, retry with a
        capped backoff for as long as the assignment holds (a new one cancels this task).
        """
        seen = time.monotonic()
        releasing = self._releasing.get(assignment.shard)
        if releasing is not None:  # this worker's own earlier epoch of the shard
            await asyncio.shield(releasing)
        await self._wait_for_release(assignment)
        delay = TAKE_RETRY_FIRST_S
        while True:
            try:
                await self._consume(assignment)
                _metrics.SHARD_TAKE_SECONDS.observe(time.monotonic() - seen)
                return
            except Superseded as exc:  # a newer owner is there: this assignment is stale
                log.warning("shard %d: not taken (%s)", assignment.shard, exc)
                _metrics.SHARDS_SUPERSEDED.inc()
                if self._pending_take.get(assignment.shard) is asyncio.current_task():
                    del self._pending_take[assignment.shard]
                return
            except (StoreUnavailable, nats.errors.Error) as exc:
                log.warning(
                    "shard %d: cannot start consuming (%r); retrying in %.1f s",
                    assignment.shard,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, TAKE_RETRY_CAP_S)

    async def _wait_for_release(self, assignment: Assignment) -> None:
        """Wait for the previous owner's "released" marker, within the handover grace; stop
        waiting as soon as its heartbeat shows it does not hold the shard any more (the
        process that held it was killed or restarted) or stops (killed or frozen)."""
        shard = assignment.shard
        if not assignment.prev or assignment.prev == self.worker_id:
            return
        interval = self.settings.heartbeat_interval_s
        deadline = time.monotonic() + self.settings.handover_grace_s
        previous = PreviousOwner(
            self._workers_kv,
            assignment.prev,
            shard,
            max(self.settings.worker_timeout_s, 3 * interval),
        )
        while self._released.get(shard, 0) < assignment.prev_epoch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _metrics.HANDOVER_TIMEOUTS.inc()
                log.warning(
                    "shard %d: %s did not release epoch %d in time; taking over",
                    shard,
                    assignment.prev,
                    assignment.prev_epoch,
                )
                return
            gone = await previous.gone()
            if gone:
                _metrics.HANDOVER_SKIPPED.labels(gone).inc()
                log.info(
                    "shard %d: previous owner %s will not release it (%s); taking over",
                    shard,
                    assignment.prev,
                    gone,
                )
                return
            self._released_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, interval)):
                    await self._released_changed.wait()

    async def _consume(self, assignment: Assignment) -> None:
        shard = assignment.shard
        assert self._nc is not None and self._js is not None and self._ctx is not None
        intake = ShardIntake(
            nc=self._nc,
            js=self._js,
            settings=self.settings,
            shard=shard,
            epoch=assignment.epoch,
            slots=self._slots,
            dispatch=self._dispatch,
            share=self._slot_share,
            still_mine=self._still_mine,
            lost=self._lost,
        )
        await intake.prepare()
        for tenant, sid in await self._ctx.store.active_sessions(shard):
            self._actor_for(tenant, sid, shard, assignment.epoch).mailbox.put_nowait(RESUME)
        task = asyncio.create_task(intake.run(), name=f"intake-{shard}")
        self._shards[shard] = _OwnedShard(shard, assignment.epoch, intake, task)
        self._pending_take.pop(shard, None)
        log.info("worker %s took shard %d at epoch %d", self.worker_id, shard, assignment.epoch)

    async def _still_mine(self, shard: int, epoch: int) -> bool:
        """Whether the placement still gives `shard` at `epoch` to this worker (True when
        the placement cannot be read: the intake retries, it does not let go on a guess)."""
        assert self._placement is not None
        try:
            entry = await self._placement.get(f"{SHARD_KEY}{shard}")
        except (KeyNotFoundError, KeyDeletedError):
            return False
        except Exception as exc:
            log.info("shard %d: placement unreadable (%r)", shard, exc)
            return True
        if not entry.value:
            return False
        current = Assignment.decode(shard, entry.value)
        return current.worker == self.worker_id and current.epoch == epoch

    def _lost(self, shard: int, epoch: int) -> None:
        """The intake of (shard, epoch) found a newer owner: let the shard go quietly."""
        owned = self._shards.get(shard)
        if owned is not None and owned.epoch == epoch:
            _metrics.SHARDS_SUPERSEDED.inc()
            self._let_go(shard, announce=False)

    async def _release(self, shard: int, *, announce: bool) -> None:
        """Stop consuming `shard`, let its actors reach a step boundary, then let it go."""
        self._let_go(shard, announce=announce)
        task = self._releasing.get(shard)
        if task is not None:
            await asyncio.shield(task)

    def _let_go(self, shard: int, *, announce: bool) -> None:
        """Start letting go of `shard` (a task: `_releasing[shard]` until it is done)."""
        owned = self._shards.pop(shard, None)
        if owned is None:
            return
        task = asyncio.create_task(self._wind_down(owned, announce), name=f"release-{shard}")
        self._releasing[shard] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._releasing.get(shard) is finished:
                del self._releasing[shard]

        task.add_done_callback(done)

    async def _wind_down(self, owned: _OwnedShard, announce: bool) -> None:
        shard = owned.shard
        await owned.intake.stop()
        actors = [(a, t) for a, t in self._actors.values() if a.shard == shard]
        turns = [a.turn.task for a, _ in actors if a.turn is not None]
        if turns:  # let running steps reach a boundary; what is left resumes on the next owner
            await asyncio.wait(turns, timeout=self.settings.handover_grace_s)
        for actor, task in actors:
            await actor.quiesce()
            task.cancel()
        await asyncio.gather(owned.task, *(t for _, t in actors), return_exceptions=True)
        if announce:
            await self._mark_released(shard, owned.epoch)
        log.info("worker %s released shard %d (epoch %d)", self.worker_id, shard, owned.epoch)

    async def _mark_released(self, shard: int, epoch: int) -> None:
        """Write `released.<shard>` = epoch, never over a newer epoch (compare-and-set)."""
        kv = self._placement
        if kv is None:
            return
        key = f"{RELEASED_KEY}{shard}"
        value = orjson.dumps({"epoch": epoch, "worker": self.worker_id})
        for _ in range(5):
            try:
                try:
                    entry = await kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):
                    await kv.create(key, value)
                    return
                if entry.value and int(orjson.loads(entry.value)["epoch"]) >= epoch:
                    return  # a newer release is already there
                await kv.update(key, value, last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue  # written meanwhile: read it again
            except Exception as exc:
                log.info("shard %d: release marker not written (%r)", shard, exc)
                return

    def _slot_share(self) -> int:
        """How many slots one shard may hold in pull requests: a fair split of the pool."""
        owned = max(1, len(self._shards) + len(self._pending_take))
        return max(1, min(MAX_OUTSTANDING, self._slots.capacity // owned))

    # -- actors ------------------------------------------------------------------------------
    def _dispatch(self, delivery: Delivery) -> None:
        owned = self._shards.get(delivery.shard)
        if owned is None:
            delivery.abandon()
            return
        actor = self._actor_for(delivery.tenant, delivery.sid, delivery.shard, owned.epoch)
        actor.last_used = time.monotonic()
        actor.mailbox.put_nowait(delivery)

    def _actor_for(self, tenant: str, sid: str, shard: int, epoch: int) -> SessionActor:
        existing = self._actors.get((tenant, sid))
        if existing is not None and not existing[0].closed:
            return existing[0]
        assert self._ctx is not None
        kept = self._written.pop((tenant, sid), None)
        written = kept[0] if kept is not None else None
        if existing is not None and existing[0].written is not None:
            written = existing[0].written  # still closing: its copy is the newest
        actor = SessionActor(
            tenant=tenant,
            sid=sid,
            shard=shard,
            epoch=epoch,
            ctx=self._ctx,
            on_exit=self._on_actor_exit,
            written=written,
        )
        task = asyncio.create_task(actor.run(), name=f"actor-{tenant}.{sid}")
        self._actors[(tenant, sid)] = (actor, task)
        return actor

    def _on_actor_exit(self, actor: SessionActor) -> None:
        key = (actor.tenant, actor.sid)
        current = self._actors.get(key)
        succeeded = current is not None and current[0] is not actor  # it took the copy
        if current is not None and not succeeded:
            del self._actors[key]
        if actor.needs_resume and actor.shard in self._shards:
            self._to_resume[key] = (actor.shard, actor.epoch)
            if actor.written is not None and not succeeded:
                # the outage may have been a failover that lost its last writes
                self._written[key] = (actor.written, time.monotonic())

    async def _maintain(self) -> None:
        """Resume sessions whose turn failed on infrastructure, and evict idle actors."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stopping.wait()
            forgotten = time.monotonic() - WRITTEN_KEPT_S
            for key, (_, since) in list(self._written.items()):
                if since < forgotten:
                    del self._written[key]
            for (tenant, sid), (shard, epoch) in list(self._to_resume.items()):
                owned = self._shards.get(shard)
                del self._to_resume[(tenant, sid)]
                if owned is not None and owned.epoch == epoch:
                    self._actor_for(tenant, sid, shard, epoch).mailbox.put_nowait(RESUME)
            excess = len(self._actors) - self.settings.max_resident_sessions
            if excess > 0:
                idle = sorted(
                    (a.last_used, key) for key, (a, _) in self._actors.items() if a.idle()
                )
                for _, key in idle[:excess]:
                    entry = self._actors.get(key)
                    if entry is None:
                        continue
                    await entry[0].quiesce()
                    if entry[0].idle():  # persisted; reloaded on its next command
                        entry[1].cancel()

    # -- dead letters ------------------------------------------------------------------------
    async def _dead_letter(self, request: DeadLetterRequest) -> None:
        assert self._js is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "nats-msg-id"}
        headers.update(
            {
                "Flotilla-Error": request.code,
                "Flotilla-Error-Message": " ".join(request.message.split())[:512],
                "Flotilla-Stream-Seq": str(request.seq),
                "Nats-Msg-Id": f"dlq-{request.seq}",
            }
        )
        await publish_retrying(
            self._js, self._subjects.dlq(request.tenant, request.sid), request.data, headers=headers
        )


class _Stop(Exception):
    pass
