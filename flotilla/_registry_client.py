"""The client side of the registry requests (PROTOCOL §7), for the SDK, the CLI and tools.

With the fleet key, `register` seals the secret opts before they leave the process, so the
request itself carries no plain secret; without it the router seals them on arrival.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS

from flotilla._connect import connect_nats
from flotilla._crypto import FleetCipher, seal_opts
from flotilla.errors import FlotillaError, UnavailableError
from flotilla.settings import Settings
from schemas import ProviderProfile, RegistryReply, Subjects

NO_RESPONDER_PAUSE_S = 0.1
"""How long a request waits before asking again when no router has subscribed (yet)."""

REQUIRE_SEALED = "Flotilla-Require-Sealed"
"""Header of a `register` request: refuse to store a secret opt unencrypted."""


class RegistryClient:
    """register / unregister / get / list over NATS request-reply; errors raise FlotillaError
    with the router's code (`not_found`, `invalid_request`, `unavailable`)."""

    def __init__(
        self,
        nc: NATS,
        *,
        subjects: Subjects,
        cipher: FleetCipher | None = None,
        timeout: float = 5.0,
        owns_nc: bool = False,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._cipher = cipher
        self._timeout = timeout
        self._owns_nc = owns_nc

    @classmethod
    async def connect(cls, settings: Settings) -> RegistryClient:
        nc = await connect_nats(settings, name="flotilla-registry-client")
        return cls(
            nc,
            subjects=settings.subjects,
            cipher=FleetCipher.from_setting(settings.fleet_key),
            owns_nc=True,
        )

    async def close(self) -> None:
        if self._owns_nc:
            await self._nc.drain()

    async def register(self, profile: ProviderProfile, *, allow_plaintext: bool = True) -> int:
        """Create or replace a profile; returns the registry revision of the change.

        `allow_plaintext=False`: the router refuses (`plaintext_refused`) to store a secret
        opt it cannot seal (it has no fleet key), rather than keep it unencrypted.
        """
        if self._cipher is not None:
            opts = seal_opts(profile.opts, self._cipher, profile=profile.name)
            profile = profile.model_copy(update={"opts": opts})
        headers = None if allow_plaintext else {REQUIRE_SEALED: "1"}
        reply = await self._request(
            "register", profile.model_dump_json(exclude_none=True), headers=headers
        )
        return int(reply.revision or 0)

    async def unregister(self, name: str) -> int:
        reply = await self._request("unregister", {"name": name})
        return int(reply.revision or 0)

    async def get(self, name: str) -> ProviderProfile:
        """The profile, secret opts shown as `***`."""
        reply = await self._request("get", {"name": name})
        assert reply.profile is not None
        return reply.profile

    async def list(self, tenant: str | None = None) -> list[ProviderProfile]:
        """Every profile (or one tenant's), secret opts shown as `***`."""
        reply = await self._request("list", {"tenant": tenant} if tenant else {})
        return list(reply.profiles or [])

    async def _request(
        self, verb: str, body: dict[str, Any] | str, *, headers: dict[str, str] | None = None
    ) -> RegistryReply:
        payload = body.encode() if isinstance(body, str) else orjson.dumps(body)
        deadline = time.monotonic() + self._timeout
        while True:  # no responder for a moment: a router starting, or reconnecting to NATS
            left = deadline - time.monotonic()
            try:
                msg = await self._nc.request(
                    self._subjects.registry(verb), payload, timeout=max(left, 0.01), headers=headers
                )
                break
            except nats.errors.NoRespondersError:
                if left <= NO_RESPONDER_PAUSE_S:
                    raise UnavailableError("no router answers registry requests") from None
                await asyncio.sleep(NO_RESPONDER_PAUSE_S)
            except nats.errors.TimeoutError:
                raise UnavailableError(
                    f"registry {verb} got no reply in {self._timeout} s"
                ) from None
        reply = RegistryReply.model_validate_json(msg.data)
        if not reply.ok:
            raise FlotillaError(reply.message or verb, code=reply.error or "registry_error")
        return reply
