"""The client side of the registry requests (PROTOCOL §7), for the SDK, the CLI and tools.

With the fleet key, `register` seals the secret opts before they leave the process, so the
request itself carries no plain secret; without it the router seals them on arrival.
"""

from __future__ import annotations

from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS

from flotilla._connect import connect_nats
from flotilla._crypto import FleetCipher, seal_opts
from flotilla.errors import FlotillaError, UnavailableError
from flotilla.settings import Settings
from schemas import ProviderProfile, RegistryReply, Subjects


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

    async def register(self, profile: ProviderProfile) -> int:
        """Create or replace a profile; returns the registry revision of the change."""
        if self._cipher is not None:
            opts = seal_opts(profile.opts, self._cipher, profile=profile.name)
            profile = profile.model_copy(update={"opts": opts})
        reply = await self._request("register", profile.model_dump_json(exclude_none=True))
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

    async def _request(self, verb: str, body: dict[str, Any] | str) -> RegistryReply:
        payload = body.encode() if isinstance(body, str) else orjson.dumps(body)
        try:
            msg = await self._nc.request(
                self._subjects.registry(verb), payload, timeout=self._timeout
            )
        except nats.errors.NoRespondersError:
            raise UnavailableError("no router answers registry requests") from None
        except nats.errors.TimeoutError:
            raise UnavailableError(f"registry {verb} got no reply in {self._timeout} s") from None
        reply = RegistryReply.model_validate_json(msg.data)
        if not reply.ok:
            raise FlotillaError(reply.message or verb, code=reply.error or "registry_error")
        return reply
