"""The provider registry as a node sees it (PROTOCOL §7): an in-memory copy kept current by
the `registry.changed` broadcast, the resolver that turns a stored profile into the opts of
an LLM request, and the client of the router's registry requests.

Revisions are consecutive: a copy at revision R applies the change R + 1 and reloads the
whole set when it sees anything later (a gap), at start, and when a periodic check finds the
stored revision elsewhere than its own (a broadcast lost with a router that died mid-change).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from flotilla._crypto import FleetCipher, SecretError, open_opts
from flotilla._imports import load_object
from flotilla._registry_client import RegistryClient
from flotilla._registry_store import RegistryStore
from flotilla.errors import ConfigurationError
from flotilla.settings import Settings
from schemas import ProviderProfile, RegistryChange, Subjects

__all__ = [
    "ProfileResolver",
    "ProviderRegistryCopy",
    "RegistryClient",
    "ReloadCause",
    "ResolverCache",
    "SecretError",
    "build_resolver",
]

log = logging.getLogger(__name__)

ReloadCause = Literal["start", "gap", "resync"]
ProfileResolver = Callable[[ProviderProfile], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""A node's resolver hook: the profile, its secrets already opened with the fleet key, in;
the opts of the LLM request out (a Vault or KMS lookup, say). Sync or async."""


class ProviderRegistryCopy:
    """Every profile of the fleet in memory; `lookup` is a dict read, never I/O."""

    def __init__(
        self,
        nc: NATS,
        redis: aioredis.Redis,
        *,
        subjects: Subjects,
        key_prefix: str,
        resync_s: float = 5.0,
        on_change: Callable[[str | None], None] | None = None,
        on_reload: Callable[[ReloadCause], None] | None = None,
    ) -> None:
        self._nc = nc
        self._store = RegistryStore(redis, key_prefix=key_prefix)
        self._subject = subjects.registry_changed
        self._resync_s = resync_s
        self._on_change = on_change
        self._on_reload = on_reload
        self._profiles: dict[str, ProviderProfile] = {}
        self._lock = asyncio.Lock()
        self._advanced = asyncio.Condition()
        self._stale = False
        self._sub: Subscription | None = None
        self._resync: asyncio.Task[None] | None = None
        self.revision = 0

    def lookup(self, name: str) -> ProviderProfile | None:
        """The stored profile `name` (secrets still sealed), or None."""
        return self._profiles.get(name)

    @property
    def profiles(self) -> Mapping[str, ProviderProfile]:
        return self._profiles

    async def start(self) -> None:
        """Subscribe to changes first, then load the whole set: nothing falls in between."""
        self._sub = await self._nc.subscribe(self._subject, cb=self._on_message)
        await self._nc.flush()  # the server has the subscription before the set is read
        await self._reload("start")
        self._resync = asyncio.create_task(self._keep_in_step(), name="registry-resync")

    async def close(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
            self._resync = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def wait_for(self, revision: int) -> None:
        """Return once the copy is at `revision` or later (the caller bounds the wait)."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.revision >= revision)

    # -- changes -----------------------------------------------------------------------------
    async def _on_message(self, msg: Msg) -> None:
        try:
            change = RegistryChange.model_validate_json(msg.data)
        except ValidationError:
            log.warning("registry: ignored a malformed change on %s", msg.subject)
            return
        try:
            async with self._lock:
                if change.revision <= self.revision:
                    return  # seen already, or covered by a reload
                if change.revision > self.revision + 1:
                    await self._reload_locked("gap")
                else:
                    await self._apply(change)
            await self._advance()
        except Exception as exc:  # Redis unreachable: the periodic check reloads later
            self._stale = True
            log.warning("registry: change %d not applied (%r)", change.revision, exc)

    async def _apply(self, change: RegistryChange) -> None:
        # The stored profile may already be newer than this change; the later change's
        # own broadcast then reads it again, so the copy converges either way.
        profile = await self._store.get(change.name) if change.op == "put" else None
        if profile is None:
            self._profiles.pop(change.name, None)
        else:
            self._profiles[change.name] = profile
        self.revision = change.revision
        if self._on_change is not None:
            self._on_change(change.name)

    async def _reload(self, cause: ReloadCause) -> None:
        async with self._lock:
            await self._reload_locked(cause)
        await self._advance()

    async def _reload_locked(self, cause: ReloadCause) -> None:
        revision, profiles = await self._store.load()
        self._profiles = profiles
        self.revision = revision
        self._stale = False
        if self._on_change is not None:
            self._on_change(None)
        if self._on_reload is not None:
            self._on_reload(cause)
        log.info("registry: %d profiles at revision %d (%s)", len(profiles), revision, cause)

    async def _advance(self) -> None:
        async with self._advanced:
            self._advanced.notify_all()

    async def _keep_in_step(self) -> None:
        while True:
            await asyncio.sleep(self._resync_s)
            try:
                if self._stale or await self._store.revision() != self.revision:
                    await self._reload("resync")
            except Exception as exc:
                log.warning("registry: revision check failed (%r)", exc)


@dataclass(slots=True)
class _Resolved:
    profile: ProviderProfile
    opts: dict[str, Any]
    expires: float


class ResolverCache:
    """Runtime opts of a profile: its sealed secrets opened with the fleet key, then the
    node's resolver hook if any, kept for `ttl_s` (a rotated Vault secret is read again)."""

    def __init__(
        self,
        *,
        cipher: FleetCipher | None,
        hook: ProfileResolver | None = None,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cipher = cipher
        self._hook = hook
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Resolved] = {}

    def cached(self, profile: ProviderProfile) -> dict[str, Any] | None:
        """The opts resolved for this very version of the profile, while fresh; no I/O."""
        entry = self._entries.get(profile.name)
        if entry is not None and entry.profile is profile and entry.expires > self._clock():
            return entry.opts
        return None

    async def resolve(self, profile: ProviderProfile) -> dict[str, Any]:
        """The profile's runtime opts; raises whatever decryption or the hook raised."""
        opts = self.cached(profile)
        if opts is not None:
            return opts
        opened = open_opts(profile.opts, self._cipher, profile=profile.name)
        if self._hook is not None:
            result = self._hook(profile.model_copy(update={"opts": opened}))
            if inspect.isawaitable(result):
                result = await result
            opened = dict(result)
        self._entries[profile.name] = _Resolved(profile, opened, self._clock() + self._ttl_s)
        return opened

    def forget(self, name: str | None) -> None:
        """Drop the opts of a changed profile, or of every profile (None)."""
        if name is None:
            self._entries.clear()
        else:
            self._entries.pop(name, None)


def build_resolver(settings: Settings) -> ResolverCache:
    """The resolver a node's settings describe: fleet key, hook, TTL."""
    hook: ProfileResolver | None = None
    if settings.registry_resolver:
        hook = _import_hook(settings.registry_resolver)
    return ResolverCache(
        cipher=FleetCipher.from_setting(settings.fleet_key),
        hook=hook,
        ttl_s=settings.registry_resolver_ttl_s,
    )


def _import_hook(path: str) -> ProfileResolver:
    target = load_object(path, what="FLOTILLA_REGISTRY_RESOLVER")
    if not callable(target):
        raise ConfigurationError(f"FLOTILLA_REGISTRY_RESOLVER={path!r} is not callable")
    hook: ProfileResolver = target
    return hook
