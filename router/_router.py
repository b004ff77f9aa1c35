"""Router: the control plane. Several replicas may run; one leads (a CAS-held KV key) and
the others take over within seconds when its key stops being refreshed.

The leader tracks worker membership from expiring heartbeats, writes shard placement with
owner epochs (rebalancing on join and leave, failing over on death), and sends `hibernate`
through the command stream to sessions idle past their deadline. Every replica, leader or
not, answers the provider registry requests (router/_registry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import start_http_server

from flotilla.audit import AuditPublisher
from flotilla.keys import RedisKeys, parse_member
from flotilla.placement import SHARD_KEY, Assignment, Heartbeat, parse_key
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
from router import _metrics
from router._placement import place_shards
from router._registry import RegistryServer
from schemas import approval_timeout

log = logging.getLogger(__name__)

LEADER_KEY = "leader"
TICK_S = 0.25
SWEEP_BATCH = 500

# Remove schedule entries only if unchanged since they were read (the session may have
# become active again and been rescheduled meanwhile).
_UNSCHEDULE = """
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], ARGV[i]); removed = removed + 1
  end
end
return removed
"""


class Router:
    """One router replica. `run()` until `shutdown()`."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.router_id = settings.router_id
        self._subjects = settings.subjects
        self._stopping = asyncio.Event()
        self._seen: dict[str, tuple[Heartbeat, float]] = {}
        self._assignments: dict[int, tuple[Assignment, int]] = {}
        self.is_leader = False
        self.ready = asyncio.Event()
        self._stopped = asyncio.Event()

    async def shutdown(self) -> None:
        """Stop, and return once this replica no longer answers anything (if it ran)."""
        self._stopping.set()
        if self.ready.is_set():
            await self._stopped.wait()

    async def run(self) -> None:
        settings = self.settings
        nc = await connect_nats(settings, name=f"router {self.router_id}")
        js = nc.jetstream()
        await patiently(lambda: provision(js, settings), "JetStream")
        redis = connect_redis(settings)
        replicas = settings.replicas
        subjects = self._subjects

        async def buckets() -> tuple[KeyValue, KeyValue, KeyValue]:
            return (
                await ensure_bucket(js, subjects.workers_bucket, ttl=60.0, replicas=replicas),
                await ensure_bucket(js, subjects.placement_bucket, replicas=replicas),
                await ensure_bucket(js, subjects.router_bucket, replicas=replicas),
            )

        workers, placement, leadership = await patiently(buckets, "JetStream")
        if settings.metrics_port is not None:
            start_http_server(settings.metrics_port, addr=settings.metrics_host)
        # Every replica serves the provider registry, leader or not (its state is in Redis).
        registry = RegistryServer(
            nc,
            redis,
            subjects=self._subjects,
            key_prefix=settings.redis_prefix,
            cipher=FleetCipher.from_setting(settings.fleet_key),
            audit=AuditPublisher(nc, subjects=self._subjects, enabled=settings.audit_enabled),
        )
        await registry.start()
        await patiently(registry.warn_if_plaintext, "the provider registry (Redis)")
        try:
            async with asyncio.TaskGroup() as group:
                watch = group.create_task(self._watch_workers(workers))
                self.ready.set()
                await self._lead(js, redis, placement, leadership)
                watch.cancel()
        finally:
            try:
                if self.is_leader:
                    with contextlib.suppress(Exception):
                        await leadership.delete(LEADER_KEY)  # hand over at once
                _metrics.LEADER.set(0)
                await registry.close()
                await redis.aclose()
                with contextlib.suppress(Exception):
                    await nc.drain()
            finally:
                self._stopped.set()

    # -- leadership --------------------------------------------------------------------------
    async def _lead(
        self, js: JetStreamContext, redis: aioredis.Redis, placement: KeyValue, leadership: KeyValue
    ) -> None:
        observed: tuple[int, float] = (0, time.monotonic())
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                was_leader = self.is_leader
                observed = await self._claim(leadership, observed)
                if self.is_leader and not was_leader:
                    _metrics.LEADER_CHANGES.inc()
                    log.info("router %s leads", self.router_id)
                    await self._load_assignments(placement)
                _metrics.LEADER.set(1 if self.is_leader else 0)
                if self.is_leader:
                    await self._place(placement)
                    if time.monotonic() - last_sweep >= self.settings.sweep_interval_s:
                        last_sweep = time.monotonic()
                        await self._sweep(js, redis)
                        await self._expire_approvals(js, redis)
            except Exception as exc:
                log.warning("router tick failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._stopping.wait()

    async def _claim(self, kv: KeyValue, observed: tuple[int, float]) -> tuple[int, float]:
        """Refresh or take the leader key; returns the (revision, when first seen) observed."""
        me = self.router_id.encode()
        try:
            entry = await kv.get(LEADER_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            entry = None
        now = time.monotonic()
        if entry is None or not entry.value:
            try:
                if entry is None:
                    revision = await kv.create(LEADER_KEY, me)
                else:
                    revision = await kv.update(LEADER_KEY, me, last=entry.revision)
            except Exception:
                self.is_leader = False
                return observed
            self.is_leader = True
            return revision, now
        revision = entry.revision or 0
        if entry.value == me:
            try:
                revision = await kv.update(LEADER_KEY, me, last=revision)
                self.is_leader = True
            except KeyWrongLastSequenceError:
                self.is_leader = False
            return revision, now
        self.is_leader = False
        if revision != observed[0]:
            return revision, now
        if now - observed[1] > self.settings.worker_timeout_s:
            try:  # the leader stopped refreshing its key: take over with a CAS
                revision = await kv.update(LEADER_KEY, me, last=revision)
                self.is_leader = True
                return revision, now
            except KeyWrongLastSequenceError:
                pass
        return observed

    # -- membership --------------------------------------------------------------------------
    async def _watch_workers(self, kv: KeyValue) -> None:
        """Follow the workers' heartbeats for as long as the router runs (a router whose
        watch died used to stop altogether, and with it the provider registry it serves)."""
        await watch_kv(
            kv,
            self._on_heartbeat,
            stopping=self._stopping,
            what=f"router {self.router_id}: workers",
            restarted=_metrics.WATCH_RESTARTS.inc,
        )

    def _on_heartbeat(self, entry: KeyValue.Entry) -> None:
        if not entry.value or entry.operation in ("DEL", "PURGE"):
            self._seen.pop(entry.key, None)
            return
        with contextlib.suppress(Exception):
            self._seen[entry.key] = (Heartbeat.decode(entry.value), time.monotonic())

    def responsive_workers(self) -> set[str]:
        """Live workers heard from within three heartbeats: a previous owner worth waiting
        for. One that is silent longer (killed, frozen) will not release anything in time,
        so its successor must not wait the handover grace for it."""
        window = min(self.settings.worker_timeout_s, 3 * self.settings.heartbeat_interval_s)
        cutoff = time.monotonic() - window
        return {w for w, (beat, seen) in self._seen.items() if seen >= cutoff}

    def live_workers(self) -> list[str]:
        cutoff = time.monotonic() - self.settings.worker_timeout_s
        live = sorted(
            w for w, (beat, seen) in self._seen.items() if seen >= cutoff and not beat.draining
        )
        consumed = {k for w in live for k in self._seen[w][0].shards}
        _metrics.LIVE_WORKERS.set(len(live))
        _metrics.UNOWNED_SHARDS.set(self.settings.shards - len(consumed))
        return live

    # -- placement ---------------------------------------------------------------------------
    async def _load_assignments(self, kv: KeyValue) -> None:
        self._assignments.clear()
        try:
            keys = await kv.keys()
        except Exception:
            keys = []
        for key in keys:
            parsed = parse_key(key)
            if parsed is None or parsed[0] != "shard":
                continue
            with contextlib.suppress(KeyNotFoundError, KeyDeletedError):
                entry = await kv.get(key)
                if entry.value:
                    self._assignments[parsed[1]] = (
                        Assignment.decode(parsed[1], entry.value),
                        entry.revision or 0,
                    )

    async def _place(self, kv: KeyValue) -> None:
        live = self.live_workers()
        if not live:
            return
        responsive = self.responsive_workers()
        current = {k: a.worker for k, (a, _) in self._assignments.items()}
        plan = place_shards(current, live, self.settings.shards)
        for shard, worker in sorted(plan.items()):
            previous = self._assignments.get(shard)
            if previous is not None and previous[0].worker == worker:
                continue
            old = previous[0] if previous else None
            alive = old is not None and old.worker in live and old.worker in responsive
            assignment = Assignment(
                shard,
                worker,
                epoch=(old.epoch + 1) if old else 1,
                prev=old.worker if alive and old else None,
                prev_epoch=old.epoch if alive and old else 0,
            )
            key = f"{SHARD_KEY}{shard}"
            try:
                if previous is None:
                    revision = await kv.create(key, assignment.encode())
                else:
                    revision = await kv.update(key, assignment.encode(), last=previous[1])
            except Exception as exc:
                log.warning("placement of shard %d conflicted (%r); reloading", shard, exc)
                await self._load_assignments(kv)
                return
            self._assignments[shard] = (assignment, revision)
            cause = "initial" if old is None else ("rebalance" if alive else "failover")
            _metrics.SHARD_MOVES.labels(cause).inc()

    # -- hibernation -------------------------------------------------------------------------
    async def _due(
        self, redis: aioredis.Redis, schedule: Callable[[int], str], now: int
    ) -> list[tuple[str, list[tuple[bytes, float]]]]:
        """(key, [(member, due ms)]) of each shard's schedule with entries due by `now`, read
        in one round trip; a share of SWEEP_BATCH each, so a tick's work stays bounded."""
        shards = range(self.settings.shards)
        share = max(1, SWEEP_BATCH // len(shards))
        async with redis.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.zrangebyscore(
                    schedule(shard), "-inf", now, start=0, num=share, withscores=True
                )
            replies: list[Any] = await pipe.execute()
        return [(schedule(k), due) for k, due in zip(shards, replies, strict=True) if due]

    async def _expire_approvals(self, js: JetStreamContext, redis: aioredis.Redis) -> None:
        """Send the timeout `reject` of every approval past its deadline in sessions that
        are due on the schedules. The owning worker's timer sends the same message (one
        `Nats-Msg-Id`), so this only matters when no worker holds the session: hibernated,
        or suspended on a worker that died."""
        keys = RedisKeys(self.settings.redis_prefix)
        now = int(time.time() * 1000)
        for schedule, due in await self._due(redis, keys.approval_timeouts, now):
            argv: list[str] = []
            for member, score in due:
                tenant, sid = parse_member(member)
                raw = await redis.hget(keys.state(tenant, sid), "d")
                state: dict[str, Any] = orjson.loads(raw) if raw is not None else {}
                for approval in state.get("pending_approvals") or []:
                    expires = approval.get("expires_ms")
                    if expires and expires <= now and approval.get("decision") is None:
                        body, msg_id = approval_timeout(tenant, sid, approval["approval_id"])
                        await publish_retrying(
                            js,
                            self._subjects.cmd(tenant, sid, "reject"),
                            orjson.dumps(body),
                            headers={"Nats-Msg-Id": msg_id},
                        )
                        _metrics.APPROVAL_TIMEOUTS.inc()
                argv += [member.decode(), str(int(score))]  # the worker's next save reschedules
            await redis.eval(_UNSCHEDULE, 1, schedule, *argv)

    async def _sweep(self, js: JetStreamContext, redis: aioredis.Redis) -> None:
        """Send `hibernate` to idle sessions whose deadline passed (through the command path)."""
        keys = RedisKeys(self.settings.redis_prefix)
        for schedule, due in await self._due(redis, keys.hibernation, int(time.time() * 1000)):
            argv: list[str] = []
            for member, score in due:
                tenant, sid = parse_member(member)
                command = {"op": "hibernate", "id": f"hibernate-{tenant}.{sid}-{int(score)}"}
                await publish_retrying(
                    js,
                    self._subjects.cmd(tenant, sid, "hibernate"),
                    orjson.dumps(command),
                    headers={"Nats-Msg-Id": command["id"]},
                )
                argv += [member.decode(), str(int(score))]
                _metrics.HIBERNATIONS.inc()
            await redis.eval(_UNSCHEDULE, 1, schedule, *argv)
