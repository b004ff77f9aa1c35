"""Workspaces on both backends against the session's real Redis, a fresh key prefix per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from flotilla import Settings
from flotilla.keys import RedisKeys
from tests.conftest import redis_client as connect_test_redis
from workers.tools import ToolContext, Workspace, open_workspace

MakeContext = Callable[..., ToolContext]
OpenWorkspace = Callable[..., Workspace]


@pytest.fixture
async def redis_client(servers: tuple[str, str]) -> AsyncIterator[aioredis.Redis]:
    client = connect_test_redis(servers[1])
    yield client
    await client.aclose()


@pytest.fixture
def ws_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", metrics_port=None)


@pytest.fixture
async def open_ws(
    ws_settings: Settings, redis_client: aioredis.Redis
) -> AsyncIterator[OpenWorkspace]:
    """Opens workspaces of a backend with settings overrides; clears them after the test."""
    opened: list[Workspace] = []

    def make(backend: str, **overrides: Any) -> Workspace:
        workspace = open_workspace(
            settings=ws_settings.with_overrides(workspace_backend=backend, **overrides),
            redis=redis_client,
            keys=RedisKeys(f"t{secrets.token_hex(4)}"),
            tenant="acme",
            sid=f"s{secrets.token_hex(4)}",
        )
        opened.append(workspace)
        return workspace

    yield make
    for workspace in opened:
        await workspace.clear()


@pytest.fixture(params=["redis", "dir"])
def workspace(request: pytest.FixtureRequest, open_ws: OpenWorkspace) -> Workspace:
    """The same behaviour tests run on the Redis and the directory backend."""
    return open_ws(request.param)


@pytest.fixture
def make_ctx(ws_settings: Settings) -> MakeContext:
    """A ToolContext on a workspace, with settings overrides (`shell_enabled=True`, ...)."""

    def make(workspace: Workspace, **overrides: Any) -> ToolContext:
        return ToolContext(
            session_id="s1",
            tenant="acme",
            call_id=f"call-{secrets.token_hex(3)}",
            workspace=workspace,
            settings=ws_settings.with_overrides(**overrides),
        )

    return make
