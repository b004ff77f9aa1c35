"""The provider registry's server side (PROTOCOL §7): register, unregister, get and list.

Every router replica answers, in one queue group: the profiles and the revision counter live
in Redis and each change is one atomic script, so any replica can serve any request, leader
or not. A change is persisted first, then broadcast on `registry.changed`, then answered.
Secret opts are sealed with the fleet key (when configured) before they are stored; replies,
broadcasts and audit records never carry a secret value.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from flotilla.audit import AuditPublisher, registry_change
from flotilla.runtime import (
    REDIS_ERRORS,
    REQUIRE_SEALED,
    FleetCipher,
    RegistryStore,
    plain_secrets,
    seal_opts,
)
from router import _metrics
from schemas import (
    REGISTRY_VERBS,
    ProfileName,
    ProfileQuery,
    ProviderProfile,
    RegistryChange,
    RegistryReply,
    Subjects,
)

log = logging.getLogger(__name__)

QUEUE_GROUP = "flotilla-registry"
_OUTCOMES = ("ok", "invalid_request", "not_found", "unavailable", "plaintext_refused")
_UNAVAILABLE: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)
"""What a registry request meets when Redis cannot answer it."""


class RegistryServer:
    """Answers the registry requests of one router replica; `start()` then `close()`."""

    def __init__(
        self,
        nc: NATS,
        redis: aioredis.Redis,
        *,
        subjects: Subjects,
        key_prefix: str,
        cipher: FleetCipher | None,
        audit: AuditPublisher | None = None,
    ) -> None:
        self._nc = nc
        self._store = RegistryStore(redis, key_prefix=key_prefix)
        self._subjects = subjects
        self._cipher = cipher
        self._audit = audit
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for verb in REGISTRY_VERBS:
            self._subs.append(
                await self._nc.subscribe(
                    self._subjects.registry(verb), queue=QUEUE_GROUP, cb=self._on_request
                )
            )
        await self._nc.flush()  # subscribed at the server before anyone is told we are ready

    async def close(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing already
                log.debug("registry: unsubscribe failed (%r)", exc)
        self._subs.clear()
        with contextlib.suppress(Exception):
            await self._nc.flush()  # the server has dropped us from the queue group

    async def warn_if_plaintext(self) -> None:
        """At start: say so when stored profiles keep secret opts unencrypted."""
        try:
            _, profiles = await self._store.load()
        except _UNAVAILABLE as exc:
            log.warning("registry: stored profiles not checked (%r)", type(exc).__name__)
            return
        plain = {name: plain_secrets(p.opts) for name, p in profiles.items()}
        plain = {name: opts for name, opts in plain.items() if opts}
        if plain:
            log.warning(
                "registry: %d profile(s) keep secret opts unencrypted (%s)%s",
                len(plain),
                ", ".join(f"{name}: {', '.join(opts)}" for name, opts in sorted(plain.items())),
                "" if self._cipher else "; set FLOTILLA_FLEET_KEY on routers and workers",
            )

    async def _on_request(self, msg: Msg) -> None:
        verb = msg.subject.rpartition(".")[2]
        sealed_only = bool((msg.headers or {}).get(REQUIRE_SEALED))
        try:
            reply = await self._answer(verb, msg.data, sealed_only=sealed_only)
        except _UNAVAILABLE as exc:
            log.warning("registry %s failed: Redis unavailable (%r)", verb, type(exc).__name__)
            reply = _failure("unavailable", "the registry store cannot be reached")
        outcome = "ok" if reply.ok else (reply.error or "")
        _metrics.REGISTRY_REQUESTS.labels(
            verb if verb in REGISTRY_VERBS else "other",
            outcome if outcome in _OUTCOMES else "other",
        ).inc()
        if msg.reply:
            await msg.respond(reply.model_dump_json(exclude_none=True).encode())

    async def _answer(self, verb: str, data: bytes, *, sealed_only: bool) -> RegistryReply:
        try:
            if verb == "register":
                profile = ProviderProfile.model_validate_json(data)
                return await self._register(profile, sealed_only=sealed_only)
            if verb == "unregister":
                return await self._unregister(ProfileName.model_validate_json(data).name)
            if verb == "get":
                return await self._get(ProfileName.model_validate_json(data).name)
            if verb == "list":
                return await self._list(ProfileQuery.model_validate_json(data or b"{}").tenant)
        except ValidationError as exc:
            return _failure("invalid_request", _describe(exc))
        return _failure("invalid_request", f"unknown registry request {verb!r}")

    async def _register(self, profile: ProviderProfile, *, sealed_only: bool) -> RegistryReply:
        if profile.provider == "registry":
            return _failure("invalid_request", "a profile cannot point at another profile")
        if self._cipher is not None:
            opts = seal_opts(profile.opts, self._cipher, profile=profile.name)
            profile = profile.model_copy(update={"opts": opts})
        plain = plain_secrets(profile.opts)
        if plain and sealed_only:
            return _failure(
                "plaintext_refused",
                f"this router has no fleet key (FLOTILLA_FLEET_KEY), so {', '.join(plain)} "
                "would be stored unencrypted; set the key on routers and workers, or allow "
                "plain text (flotilla registry put --allow-plaintext)",
            )
        if plain:
            log.warning(
                "registry: profile %r stored with %s unencrypted (no FLOTILLA_FLEET_KEY)",
                profile.name,
                ", ".join(plain),
            )
        revision, previous = await self._store.put(profile)
        await self._changed(RegistryChange(op="put", name=profile.name, revision=revision))
        _metrics.REGISTRY_CHANGES.labels("register").inc()
        if self._audit is not None:
            await self._audit.publish(
                registry_change("register", profile=profile, previous=previous, revision=revision)
            )
        return RegistryReply(ok=True, revision=revision)

    async def _unregister(self, name: str) -> RegistryReply:
        removed = await self._store.delete(name)
        if removed is None:
            return _failure("not_found", f"no provider profile {name!r}")
        revision, previous = removed
        await self._changed(RegistryChange(op="delete", name=name, revision=revision))
        _metrics.REGISTRY_CHANGES.labels("unregister").inc()
        if self._audit is not None and previous is not None:
            await self._audit.publish(
                registry_change("unregister", profile=previous, revision=revision)
            )
        return RegistryReply(ok=True, revision=revision)

    async def _get(self, name: str) -> RegistryReply:
        profile = await self._store.get(name)
        if profile is None:
            return _failure("not_found", f"no provider profile {name!r}")
        return RegistryReply(ok=True, profile=profile.redacted())

    async def _list(self, tenant: str | None) -> RegistryReply:
        revision, profiles = await self._store.load()
        _metrics.REGISTRY_REVISION.set(revision)
        chosen = [
            p.redacted()
            for _, p in sorted(profiles.items())
            if tenant is None or p.tenant == tenant
        ]
        return RegistryReply(ok=True, revision=revision, profiles=chosen)

    async def _changed(self, change: RegistryChange) -> None:
        _metrics.REGISTRY_REVISION.set(change.revision)
        await self._nc.publish(self._subjects.registry_changed, change.model_dump_json().encode())


def _failure(code: str, message: str) -> RegistryReply:
    return RegistryReply(ok=False, error=code, message=message)


def _describe(exc: ValidationError) -> str:
    """Where and why a request is invalid, without the input values (they may be secrets)."""
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return "; ".join(parts)[:500]
