"""Recipe 13, provider registry with encrypted keys: a node-local resolver hook opens them.

The application's database keeps each tenant's provider key encrypted by its vault (here a
stand-in: AES-GCM under a demo key, bound to the profile's name). The profile carries the
ciphertext as the opt `encrypted_key`; every worker is started with the hook of this module,

    FLOTILLA_REGISTRY_RESOLVER=examples.vault_resolver:resolve_opts

which the worker calls with the profile (its fleet-sealed opts already opened with
FLOTILLA_FLEET_KEY, which also seals `encrypted_key` at rest: it ends in `_key`) and which
returns the request's opts with the plain `api_key`. The worker keeps the result for
FLOTILLA_REGISTRY_RESOLVER_TTL_S (300 s): the recipe's ETS cache is built in, so a rotated
vault key is read again after the TTL or at once when the profile changes. A hook that raises
fails the request with `error{code: "registry_resolver_failed", profile}` (its message is not
shown), the turn ends, and the worker and the session carry on.

    FLOTILLA_REGISTRY_RESOLVER=examples.vault_resolver:resolve_opts flotilla up
    python -m examples.vault_resolver
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from examples._run import ask, run_example
from flotilla import Fleet, FlotillaError, Session
from flotilla.registry import RegistryClient
from schemas import Event, ProviderProfile

VAULT_KEY = hashlib.sha256(b"examples.vault_resolver: a demo key, not a secret").digest()
"""The vault's key (CLOAK_KEY in the recipe): the same on every node and in the database's
writer. A real vault keeps it to itself."""
_NONCE_BYTES = 12
OPENED: list[str] = []
"""The profiles whose key this process opened, in order: what a worker's hook did."""


def encrypt(plain: str, *, profile: str, key: bytes = VAULT_KEY) -> str:
    """`plain` as the database stores it for `profile` (base64 of nonce + ciphertext)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plain.encode(), profile.encode())
    return base64.b64encode(nonce + sealed).decode()


def decrypt(token: str, *, profile: str) -> str:
    """The plain text of `token`; raises `InvalidTag` for another key or profile."""
    raw = base64.b64decode(token)
    plain = AESGCM(VAULT_KEY).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], profile.encode())
    return plain.decode()


def resolve_opts(profile: ProviderProfile) -> dict[str, Any]:
    """The resolver hook: the profile's opts with `encrypted_key` replaced by `api_key`.

    It runs for every profile of the fleet: those without `encrypted_key` pass unchanged.
    """
    opts = dict(profile.opts)
    if "encrypted_key" not in opts:
        return opts
    ciphertext = str(opts.pop("encrypted_key"))
    opts["api_key"] = decrypt(ciphertext, profile=profile.name)
    OPENED.append(profile.name)
    return opts


TENANT_KEY = "sk-tenant-7-not-a-real-key"
"""The plain key of tenant 7: it leaves the vault only inside a worker's LLM request."""
ANSWERS = ("Tenant 7: the vault opened my key.", "Tenant 7: the cache kept it.")
RECOVERED = "Vault back: the re-encrypted key opened."


def _profile(name: str, encrypted_key: str, *answers: str) -> ProviderProfile:
    return ProviderProfile(
        name=name,
        provider="mock",
        opts={
            "encrypted_key": encrypted_key,
            "base_url": f"https://llm.example.com/{name}",
            "script": [{"text": text} for text in answers],
        },
    )


GOOD = _profile("tenant-7", encrypt(TENANT_KEY, profile="tenant-7"), *ANSWERS)
BROKEN = _profile(
    "tenant-vault-down",
    encrypt(TENANT_KEY, profile="tenant-vault-down", key=AESGCM.generate_key(bit_length=256)),
    RECOVERED,
)
"""Encrypted under a key the vault no longer has: the hook cannot open it."""
REPAIRED = _profile(
    "tenant-vault-down", encrypt(TENANT_KEY, profile="tenant-vault-down"), RECOVERED
)


async def main(fleet: Fleet, *, registry: RegistryClient | None = None) -> list[Event]:
    """Two turns on a profile whose key the hook decrypts, then one whose key it cannot.

    `registry` defaults to the fleet's own registry client. The
    profiles are unregistered at the end, so that a second run starts the same way.
    """
    client = registry or fleet.registry()
    sessions: list[Session] = []
    events: list[Event] = []
    try:
        await client.register(GOOD)  # the recipe's warmup
        good = await fleet.create_agent(
            session_id=f"s-{secrets.token_hex(4)}",
            model=f"registry:{GOOD.name}:script",
            user_data={"tenant_id": 7},
        )
        sessions.append(good)
        for text in ("Is my key safe?", "And now?"):
            events += await ask(good, text)
        await client.register(BROKEN)
        down = await fleet.create_agent(
            session_id=f"s-{secrets.token_hex(4)}", model=f"registry:{BROKEN.name}:script"
        )
        sessions.append(down)
        events += await ask(down, "Hello?")
        await client.register(REPAIRED)  # re-encrypted with the vault's current key
        events += await ask(down, "Hello again?")
        return events
    finally:
        for session in sessions:
            await session.stop()
        for name in (GOOD.name, BROKEN.name):
            with contextlib.suppress(FlotillaError):
                await client.unregister(name)


if __name__ == "__main__":
    run_example(main)
