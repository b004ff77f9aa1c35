"""Provider registry (PROTOCOL §7): profiles, the request and reply bodies, the broadcast."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas._base import WireModel
from schemas._ids import Token

SECRET_SUFFIXES = ("_key", "_secret", "_token")
REGISTRY_VERBS = ("register", "unregister", "get", "list")
REDACTED = "***"


def is_secret_opt(name: str) -> bool:
    """True for `api_key` and any opt whose name ends in _key, _secret or _token."""
    return name == "api_key" or name.endswith(SECRET_SUFFIXES)


class Budget(WireModel):
    """Daily limits of one tenant on one profile (UTC days); None means unlimited."""

    tokens_per_day: int | None = Field(default=None, ge=1)
    usd_per_day: float | None = Field(default=None, gt=0)


class ProviderProfile(WireModel):
    name: Token
    provider: str = Field(min_length=1, max_length=64)
    opts: dict[str, Any] = Field(default_factory=dict)
    tenant: Token | None = None
    """The only tenant whose sessions may use the profile; None: every tenant."""
    budget: Budget | None = None
    """Per-tenant daily budget: each tenant that uses the profile has its own counters."""

    def redacted(self) -> ProviderProfile:
        """The profile as replies show it: secret values replaced by `***`."""
        opts = {k: (REDACTED if is_secret_opt(k) else v) for k, v in self.opts.items()}
        return self.model_copy(update={"opts": opts})


class ProfileName(WireModel):
    """Body of `unregister` and `get`."""

    name: Token


class ProfileQuery(WireModel):
    """Body of `list`: every profile, or those of one tenant."""

    tenant: Token | None = None


class RegistryReply(WireModel):
    """Every reply of the registry: `ok` with the verb's field, or `error` and `message`."""

    ok: bool
    revision: int | None = None
    profile: ProviderProfile | None = None
    profiles: list[ProviderProfile] | None = None
    error: str | None = None
    message: str | None = None


class RegistryChange(WireModel):
    """Broadcast on `<prefix>.registry.changed` after every change, in revision order."""

    op: Literal["put", "delete"]
    name: Token
    revision: int = Field(ge=1)
