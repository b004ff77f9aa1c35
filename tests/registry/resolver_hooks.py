"""Resolver hooks that tests configure with FLOTILLA_REGISTRY_RESOLVER."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas import ProviderProfile

VAULT = {"ref-1": "the vault's answer"}
CALLS: list[str] = []


def from_vault(profile: ProviderProfile) -> Mapping[str, Any]:
    """Replaces `vault_ref` by what the vault holds (here: mock script steps)."""
    opts = dict(profile.opts)
    ref = str(opts.pop("vault_ref"))
    CALLS.append(ref)
    return {**opts, "script": [{"text": VAULT[ref]}] * 2}


async def unreachable(profile: ProviderProfile) -> Mapping[str, Any]:
    raise ConnectionError(f"vault down while reading {profile.opts.get('api_key')}")
