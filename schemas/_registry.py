"""Provider registry profiles (PROTOCOL §7)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas._base import WireModel
from schemas._ids import Token

SECRET_SUFFIXES = ("_key", "_secret", "_token")


def is_secret_opt(name: str) -> bool:
    """True for `api_key` and any opt whose name ends in _key, _secret or _token."""
    return name == "api_key" or name.endswith(SECRET_SUFFIXES)


class ProviderProfile(WireModel):
    name: Token
    provider: str = Field(min_length=1, max_length=64)
    opts: dict[str, Any] = Field(default_factory=dict)
    tenant: Token | None = None

    def redacted(self) -> ProviderProfile:
        """The profile as replies show it: secret values replaced by `***`."""
        opts = {k: ("***" if is_secret_opt(k) else v) for k, v in self.opts.items()}
        return self.model_copy(update={"opts": opts})
