"""A real gateway (uvicorn on a loopback port, lifespan on) in front of the test fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from flotilla.settings import GatewaySettings
from gateway import create_app
from tests.conftest import Harness
from tests.loopback_http import LoopbackServer

KEYS = "k-acme:acme,k-acme-2:acme,k-beta:beta"
ADMIN = "k-admin:acme"


class GatewayUnderTest:
    def __init__(self, server: LoopbackServer, fleet: Harness) -> None:
        self.server = server
        self.fleet = fleet
        self.url = f"http://127.0.0.1:{server.port}"

    def client(self, key: str | None = "k-acme") -> httpx.AsyncClient:
        headers = {"X-API-Key": key} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10.0)


GatewayFactory = Callable[..., Awaitable[GatewayUnderTest]]


@pytest.fixture
async def gateway_factory(fleet: Harness) -> AsyncIterator[GatewayFactory]:
    servers: list[LoopbackServer] = []

    async def make(harness: Harness | None = None, **overrides: Any) -> GatewayUnderTest:
        """A gateway on `harness` (default: the `fleet` fixture) with GatewaySettings
        `overrides` (rate limit off unless given)."""
        target = harness or fleet
        config = GatewaySettings(
            **{"api_keys": KEYS, "admin_keys": ADMIN, "rate_limit_rpm": 100_000, **overrides}
        )
        server = LoopbackServer(
            create_app(target.settings, config), lifespan="on", ws="websockets-sansio"
        )
        await server.start()
        servers.append(server)
        return GatewayUnderTest(server, target)

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def gateway(gateway_factory: GatewayFactory) -> GatewayUnderTest:
    return await gateway_factory()
