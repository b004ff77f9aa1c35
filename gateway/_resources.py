"""The gateway's resources: the connections and stores every route uses.

Everything a request needs lives in NATS (commands, events, the registry) and Redis (session
state, the directory, rate-limit buckets, the meter), so any number of replicas can serve
the same fleet behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import nats.errors
import redis.asyncio as aioredis
from fastapi import Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from flotilla import Fleet
from flotilla.registry import ProviderRegistryCopy
from flotilla.runtime import FleetCipher, connect_nats, connect_redis, provision
from flotilla.settings import GatewaySettings, Settings
from gateway._auth import KeyTable
from gateway._directory import DirectoryEntry, SessionDirectory
from gateway._errors import ApiError
from gateway._limits import Meter, RateLimiter, usage_handler
from gateway._views import SessionReader, parent_of
from gateway._watch import watch_events
from gateway._webhooks import WebhookDeliverer
from schemas import Event

log = logging.getLogger(__name__)

__all__ = ["Gateway", "gateway_of"]


@dataclass
class Gateway:
    """What every route uses: connections, the directory, the limiter and meter."""

    settings: Settings
    config: GatewaySettings
    keys: KeyTable
    nc: NATS
    js: JetStreamContext
    redis: aioredis.Redis
    directory: SessionDirectory
    reader: SessionReader
    limiter: RateLimiter
    meter: Meter
    registry: ProviderRegistryCopy
    fleets: dict[str, Fleet] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, settings: Settings, config: GatewaySettings) -> Gateway:
        nc = await connect_nats(settings, name=f"flotilla-gateway {settings.worker_id}")
        js = nc.jetstream()
        await provision(js, settings)
        redis = connect_redis(settings)
        prefix = settings.redis_prefix
        registry = ProviderRegistryCopy(
            nc,
            redis,
            subjects=settings.subjects,
            key_prefix=prefix,
            resync_s=settings.registry_resync_s,
        )
        await registry.start()
        gateway = cls(
            settings=settings,
            config=config,
            keys=KeyTable.from_settings(config),
            nc=nc,
            js=js,
            redis=redis,
            directory=SessionDirectory(redis, key_prefix=prefix),
            reader=SessionReader(redis, key_prefix=prefix),
            limiter=RateLimiter(
                redis,
                key_prefix=prefix,
                rpm=config.rate_limit_rpm,
                burst=config.rate_limit_burst or None,
            ),
            meter=Meter(redis, key_prefix=prefix, turn_memory_s=settings.event_max_age_s),
            registry=registry,
        )
        gateway._start_background()
        return gateway

    def _start_background(self) -> None:
        subjects = self.settings.subjects
        watched = [
            f"{subjects.prefix}.evt.*.*.*.control.session_created",
            f"{subjects.prefix}.evt.*.*.*.control.session_stopped",
            f"{subjects.prefix}.evt.*.*.*.progress.agent_end",
        ]
        meter_usage = usage_handler(self.meter, self.directory.owner)

        async def on_event(event: Event) -> None:
            if event.type == "agent_end":
                await meter_usage(event)
            elif event.type == "session_stopped":
                await self.directory.delete(event.tenant, event.sid)
            elif event.type == "session_created":
                await self._adopt(event)

        self.tasks.append(
            asyncio.create_task(
                watch_events(
                    self.js,
                    stream=subjects.evt_stream,
                    durable=f"{subjects.prefix}-gateway-directory",
                    filter_subjects=watched,
                    handler=on_event,
                    stop=self.stop,
                ),
                name="gateway-watcher",
            )
        )
        deliverer = WebhookDeliverer(
            self.nc,
            subjects=subjects,
            tenant_secrets=self.settings.tenant_secrets,
            allow=self.settings.callback_allow,
            backoff_base_s=self.config.webhook_backoff_base_s,
            max_attempts=self.config.webhook_max_attempts,
            replicas=self.settings.replicas,
        )
        self.tasks.append(asyncio.create_task(deliverer.run(self.stop), name="gateway-webhooks"))

    def fleet(self, tenant: str) -> Fleet:
        """The SDK's view of the fleet for `tenant`, on the gateway's one connection."""
        fleet = self.fleets.get(tenant)
        if fleet is None:
            fleet = self.fleets[tenant] = Fleet(
                self.nc,
                subjects=self.settings.subjects,
                tenant=tenant,
                owns_nc=False,
                cipher=FleetCipher.from_setting(self.settings.fleet_key),
            )
        return fleet

    async def _adopt(self, event: Event) -> None:
        """A session created without the gateway (SDK, plain NATS) joins the directory."""
        state = await self.reader.state(event.sid, event.tenant)
        if state is None:  # stopped already
            return
        await self.directory.create(
            DirectoryEntry(
                sid=event.sid,
                tenant=event.tenant,
                model=state.get("model", ""),
                created_ms=int(state.get("created_ms", event.ts)),
                group=event.group,
                parent=parent_of(state),
            )
        )

    async def position(self) -> int:
        """The event stream's last sequence: "now" as a cursor, fixed when a request arrives
        rather than when a consumer gets created."""
        try:
            info = await self.js.stream_info(self.settings.subjects.evt_stream)
        except nats.errors.Error as exc:
            raise ApiError(503, f"the event stream did not answer: {exc}") from None
        return int(info.state.last_seq)

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.registry.close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.redis.aclose()

    async def healthy(self) -> bool:
        if not self.nc.is_connected:
            return False
        try:
            async with asyncio.timeout(1.0):
                await self.redis.ping()
        except Exception:
            return False
        return True


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway
