"""Secrets of session options are sealed with the fleet key, bound to their tenant: a sealed
value copied into another tenant's session does not open there."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable

import pytest

from flotilla import CommandError, Fleet
from flotilla.runtime import FleetCipher, SecretError, open_secrets, seal_command
from tests.conftest import Harness

KEY = base64.b64encode(os.urandom(32)).decode()


def test_a_secret_sealed_for_one_tenant_opens_only_for_it() -> None:
    cipher = FleetCipher.from_setting(KEY)
    assert cipher is not None
    body = seal_command({"provider_opts": {"api_key": "sk-1", "base_url": "u"}}, cipher, "acme")
    sealed = body["provider_opts"]
    assert sealed["api_key"].startswith("enc:v1:") and sealed["base_url"] == "u"
    assert open_secrets(sealed, cipher, "acme") == {"api_key": "sk-1", "base_url": "u"}
    with pytest.raises(SecretError):
        open_secrets(sealed, cipher, "beta")


async def test_another_tenant_cannot_use_a_sealed_key_it_copied(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    fleet = await (await harness_factory(fleet_key=KEY)).start_fleet("w1")
    assert fleet.fleet is not None
    theirs = await fleet.fleet.create_agent(
        model="mock:echo", provider_opts={"api_key": "sk-acme-only"}
    )
    copied = (await fleet.state(theirs.sid))["provider_opts"]["api_key"]
    assert copied.startswith("enc:v1:"), "kept sealed in Redis"
    async with await Fleet.connect(settings=fleet.settings, tenant="beta") as beta:
        mine = await beta.create_agent(model="mock:echo", provider_opts={"api_key": copied})
        await mine.prompt("spend acme's key")
        with pytest.raises(CommandError) as failed:
            await mine.collect_reply(timeout=10)
    assert failed.value.code == "secret_unreadable"
    await theirs.prompt("mine")
    assert await theirs.collect_reply(timeout=10) == "echo: mine"
