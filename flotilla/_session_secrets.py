"""Secrets in a session's options — provider keys in `provider_opts`, in sub-agents' and in
plugin options (a judge's `judge_provider_opts`) — sealed with the fleet key wherever they
are kept: the SDK and the gateway seal them before a command leaves the process, workers seal
what a client without the key sent before it is saved, and open them only to make a request.

A secret is any key `schemas.is_secret_opt` names (`api_key`, `*_key`, `*_secret`,
`*_token`), at any depth of those option objects. Without a fleet key nothing is sealed (the
README says so); with one, neither NATS nor Redis ever holds such a value in plain text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flotilla._crypto import FleetCipher, SecretError, is_sealed
from schemas import is_secret_opt

__all__ = ["open_secrets", "seal_command"]


def _bound_to(tenant: str) -> str:
    """What a session secret is bound to besides its opt name: its tenant, so that a sealed
    value copied into another tenant's session does not open (a sealed key of tenant A,
    seen on the command stream, cannot be replayed by tenant B to spend A's provider key)."""
    return f"session:{tenant}"


SEALED_OPS = frozenset({"create", "switch_model", "update_plugin_opts"})


def seal_command(body: Mapping[str, Any], cipher: FleetCipher, tenant: str) -> dict[str, Any]:
    """A command's body with every plain secret of its options sealed for `tenant` (the
    others as they are)."""
    bound = _bound_to(tenant)
    sealed = dict(body)
    if "provider_opts" in sealed:
        sealed["provider_opts"] = _seal(sealed["provider_opts"], cipher, bound)
    if "opts" in sealed:  # update_plugin_opts
        sealed["opts"] = _seal(sealed["opts"], cipher, bound)
    if isinstance(sealed.get("plugins"), list):
        sealed["plugins"] = [_seal(p, cipher, bound) for p in sealed["plugins"]]
    if isinstance(sealed.get("subagents"), list):
        sealed["subagents"] = [
            seal_command(s, cipher, tenant) if isinstance(s, Mapping) else s
            for s in sealed["subagents"]
        ]
    return sealed


def _seal(value: Any, cipher: FleetCipher, bound: str) -> Any:
    if isinstance(value, Mapping):
        return {
            key: cipher.seal(item, profile=bound, opt=key)
            if is_secret_opt(str(key)) and item is not None and not is_sealed(item)
            else _seal(item, cipher, bound)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_seal(item, cipher, bound) for item in value]
    return value


def open_secrets(value: Any, cipher: FleetCipher | None, tenant: str) -> Any:
    """`value` with every sealed secret of `tenant` opened, to make a request with it;
    SecretError when one cannot be (this node has no fleet key or another one, or the value
    was sealed for another tenant)."""
    if isinstance(value, Mapping):
        opened: dict[str, Any] = {}
        for key, item in value.items():
            if is_sealed(item):
                if cipher is None:
                    raise SecretError(
                        f"{key!r} is sealed with the fleet key and this node has none "
                        "(FLOTILLA_FLEET_KEY)"
                    )
                opened[key] = cipher.open(item, profile=_bound_to(tenant), opt=str(key))
            else:
                opened[key] = open_secrets(item, cipher, tenant)
        return opened
    if isinstance(value, list):
        return [open_secrets(item, cipher, tenant) for item in value]
    return value
