"""Secret profile opts sealed with the fleet key (AES-GCM, 96-bit random nonces).

A sealed value is the string `enc:v1:<base64url(nonce + ciphertext + tag)>`, whatever the
plain value's JSON type. The associated data binds it to its profile and opt name, so a
sealed value copied into another profile or opt does not open.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flotilla.errors import FlotillaError
from schemas import is_secret_opt

SEALED_PREFIX = "enc:v1:"
_NONCE_BYTES = 12

__all__ = ["SEALED_PREFIX", "FleetCipher", "SecretError", "is_sealed", "open_opts", "seal_opts"]


class SecretError(FlotillaError):
    """A sealed value that cannot be opened: no fleet key, another key, or damaged."""

    code = "secret_unreadable"


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


class FleetCipher:
    """AES-GCM with the fleet key; `repr` never shows the key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the fleet key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, fleet_key: str) -> FleetCipher | None:
        """The cipher of `Settings.fleet_key` (base64, validated there); None when unset."""
        return cls(base64.b64decode(fleet_key)) if fleet_key else None

    def __repr__(self) -> str:
        return "FleetCipher(***)"

    def seal(self, value: Any, *, profile: str, opt: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), _aad(profile, opt))
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str, *, profile: str, opt: str) -> Any:
        try:
            raw = base64.urlsafe_b64decode(token[len(SEALED_PREFIX) :].encode())
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(profile, opt))
        except (InvalidTag, ValueError):
            raise SecretError(
                f"opt {opt!r} of profile {profile!r} was sealed with another fleet key "
                "or is damaged"
            ) from None
        return orjson.loads(plain)


def _aad(profile: str, opt: str) -> bytes:
    return f"flotilla-registry/{profile}/{opt}".encode()


def seal_opts(opts: Mapping[str, Any], cipher: FleetCipher, *, profile: str) -> dict[str, Any]:
    """`opts` with every secret opt sealed (values sealed already are kept as they are)."""
    return {
        name: cipher.seal(value, profile=profile, opt=name)
        if is_secret_opt(name) and value is not None and not is_sealed(value)
        else value
        for name, value in opts.items()
    }


def plain_secrets(opts: Mapping[str, Any]) -> list[str]:
    """The secret opts of `opts` whose values are not sealed (stored as they are)."""
    return sorted(
        name
        for name, value in opts.items()
        if is_secret_opt(name) and value is not None and not is_sealed(value)
    )


def open_opts(
    opts: Mapping[str, Any], cipher: FleetCipher | None, *, profile: str
) -> dict[str, Any]:
    """`opts` with every sealed value opened; SecretError when one cannot be."""
    opened = dict(opts)
    for name, value in opts.items():
        if not is_sealed(value):
            continue
        if cipher is None:
            raise SecretError(
                f"opt {name!r} of profile {profile!r} is sealed and this node has no "
                "fleet key (FLOTILLA_FLEET_KEY)"
            )
        opened[name] = cipher.open(value, profile=profile, opt=name)
    return opened
