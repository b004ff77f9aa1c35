"""`flotilla registry put | ls | rm` against a running router."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import Harness
from tests.registry.conftest import new_fleet_key, store_of


def _cli(harness: Harness, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(
        os.environ,
        FLOTILLA_NATS_URL=harness.settings.nats_url,
        FLOTILLA_PREFIX=harness.settings.prefix,
        FLOTILLA_FLEET_KEY=harness.settings.fleet_key,
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "flotilla", "registry", *args],
        env=environment,
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )


async def test_put_ls_and_rm_manage_profiles(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await harness_factory(fleet_key=new_fleet_key())
    await harness.start_router()
    put = await asyncio.to_thread(
        _cli,
        harness,
        *("put", "acme-openai", "--provider", "openai", "--tenant", "acme"),
        *("--opt", "base_url=http://127.0.0.1:9/v1", "--opt", "timeout_ms=30000"),
        *("--opt-env", "api_key=TEST_PROVIDER_KEY", "--budget-tokens", "5000"),
        TEST_PROVIDER_KEY="sk-from-env-3",
    )
    assert put.returncode == 0, put.stderr
    assert "registered acme-openai (revision 1)" in put.stdout
    stored = await store_of(harness).get("acme-openai")
    assert stored is not None and stored.opts["timeout_ms"] == 30000
    assert str(stored.opts["api_key"]).startswith("enc:v1:")  # sealed by the CLI itself

    listed = await asyncio.to_thread(_cli, harness, "ls", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert "acme-openai" in listed.stdout and '"api_key":"***"' in listed.stdout
    assert '"tokens_per_day":5000' in listed.stdout and "sk-from-env-3" not in listed.stdout

    removed = await asyncio.to_thread(_cli, harness, "rm", "acme-openai")
    assert removed.returncode == 0 and "revision 2" in removed.stdout
    again = await asyncio.to_thread(_cli, harness, "rm", "acme-openai")
    assert again.returncode == 2 and "no provider profile" in again.stderr


async def test_put_refuses_a_bad_profile_name(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await harness_factory()
    result = await asyncio.to_thread(_cli, harness, "put", "a:b", "--provider", "mock")
    assert result.returncode == 2 and "name" in result.stderr


async def test_put_of_a_secret_without_a_fleet_key_is_refused_unless_allowed(
    harness_factory: Callable[..., Awaitable[Harness]], caplog: pytest.LogCaptureFixture
) -> None:
    harness = await harness_factory()  # no FLOTILLA_FLEET_KEY anywhere
    router = await harness.start_router()
    args = ("put", "plain", "--provider", "openai", "--opt-env", "api_key=TEST_PROVIDER_KEY")
    refused = await asyncio.to_thread(_cli, harness, *args, TEST_PROVIDER_KEY="sk-plain-1")
    assert refused.returncode == 2
    assert "would be stored unencrypted" in refused.stderr and "--allow-plaintext" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert await store_of(harness).get("plain") is None
    allowed = await asyncio.to_thread(
        _cli, harness, *args, "--allow-plaintext", TEST_PROVIDER_KEY="sk-plain-1"
    )
    assert allowed.returncode == 0, allowed.stderr
    stored = await store_of(harness).get("plain")
    assert stored is not None and stored.opts["api_key"] == "sk-plain-1"
    await router.shutdown()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="router._registry"):
        await harness.start_router()  # a router starting finds the plain secret
    warned = [r.getMessage() for r in caplog.records if "unencrypted" in r.getMessage()]
    assert warned == [
        "registry: 1 profile(s) keep secret opts unencrypted (plain: api_key); "
        "set FLOTILLA_FLEET_KEY on routers and workers"
    ]
    assert "sk-plain-1" not in caplog.text
