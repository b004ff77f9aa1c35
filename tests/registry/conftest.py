"""Fixtures of the provider registry tests: a fleet key, clients, a gateway-style copy."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from flotilla.registry import ProviderRegistryCopy, RegistryClient, ReloadCause
from flotilla.runtime import FleetCipher, RegistryStore
from tests.conftest import Harness


def new_fleet_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def client_of(harness: Harness, *, with_key: bool = True) -> RegistryClient:
    """A registry client on the harness's connection; it seals secrets when `with_key`."""
    assert harness.nc is not None
    key = harness.settings.fleet_key if with_key else ""
    return RegistryClient(
        harness.nc, subjects=harness.settings.subjects, cipher=FleetCipher.from_setting(key)
    )


def store_of(harness: Harness) -> RegistryStore:
    """The registry's Redis store, for writes that bypass the router (no broadcast)."""
    return RegistryStore(harness.redis, key_prefix=harness.settings.redis_prefix)


class GatewayCopy:
    """A registry copy as a gateway holds one, with the causes of its reloads."""

    def __init__(self, copy: ProviderRegistryCopy, reloads: list[ReloadCause]) -> None:
        self.copy = copy
        self.reloads = reloads


@pytest.fixture
async def gateway_copy(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> AsyncIterator[Callable[..., Awaitable[GatewayCopy]]]:
    """Makes copies of a harness's registry; each is closed after the test."""
    made: list[ProviderRegistryCopy] = []

    async def make(harness: Harness, **options: Any) -> GatewayCopy:
        assert harness.nc is not None
        reloads: list[ReloadCause] = []
        copy = ProviderRegistryCopy(
            harness.nc,
            harness.redis,
            subjects=harness.settings.subjects,
            key_prefix=harness.settings.redis_prefix,
            on_reload=reloads.append,
            **options,
        )
        holder = GatewayCopy(copy, reloads)
        made.append(copy)
        await copy.start()
        return holder

    yield make
    for copy in made:
        await copy.close()
