"""API keys → tenants (PROTOCOL §8): kept only as SHA-256 digests, compared in constant time.

A key is given as `key` or `key:tenant` (tenant `default` when omitted), or pre-hashed as
`sha256:<64 hex>[:tenant]` so that a deployment never stores the key itself. A request's key
is hashed once and looked up by digest; the digest found is then compared with
`hmac.compare_digest`, so neither the lookup nor the comparison reveals how much of a guess
was right. The digest's first 16 hex characters are the key's id: what the directory, the
rate limiter and the meter store, and what logs may show.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from flotilla.settings import GatewaySettings
from schemas import DEFAULT_TENANT, is_token

__all__ = ["KeyTable", "Principal", "key_digest"]

_HASHED = "sha256:"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: its key's id, its tenant, and whether the key is an admin key."""

    key_id: str
    tenant: str
    admin: bool = False


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyTable:
    """Every key the gateway accepts, by digest."""

    def __init__(self, entries: dict[str, Principal]) -> None:
        self._by_digest = {digest: (digest.encode(), p) for digest, p in entries.items()}

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> KeyTable:
        entries: dict[str, Principal] = {}
        specs = _split(settings.api_keys)
        if settings.keys_file:
            lines = Path(settings.keys_file).read_text().splitlines()
            specs += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        for spec in specs:
            digest, tenant = _parse(spec)
            entries[digest] = Principal(key_id=digest[:16], tenant=tenant)
        for spec in _split(settings.admin_keys):
            digest, tenant = _parse(spec)
            entries[digest] = Principal(key_id=digest[:16], tenant=tenant, admin=True)
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal of `key`, or None for a missing or unknown key."""
        if not key:
            return None
        digest = key_digest(key)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(digest.encode(), found[0]):
            return None
        return found[1]


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse(spec: str) -> tuple[str, str]:
    """(digest, tenant) of one `key[:tenant]` or `sha256:<hex>[:tenant]` entry."""
    if spec.startswith(_HASHED):
        digest, _, tenant = spec[len(_HASHED) :].partition(":")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("a sha256: key must be 64 hex characters")
    else:
        key, _, tenant = spec.partition(":")
        digest = key_digest(key)
    tenant = tenant or DEFAULT_TENANT
    if not is_token(tenant):
        raise ValueError(f"tenant {tenant!r} of a gateway key is not a valid identifier")
    return digest, tenant
