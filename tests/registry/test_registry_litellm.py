"""A registry profile over real HTTP: its key and base_url reach an OpenAI-compatible server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from schemas import ProviderProfile
from tests.conftest import Harness
from tests.engine_helpers import until_end
from tests.openai_stub import OpenAIStub, Reply
from tests.registry.conftest import client_of, new_fleet_key
from workers import Worker

KEY = "sk-registry-DO-NOT-LEAK-77"


@pytest.mark.usefixtures("litellm_loopback")
async def test_the_profiles_key_and_base_url_reach_the_provider(
    harness_factory: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await (await harness_factory(fleet_key=new_fleet_key())).start_fleet("w1")
    assert harness.fleet is not None
    async with OpenAIStub() as stub, OpenAIStub() as elsewhere:
        stub.script(Reply(text="from the profile's server"))
        revision = await client_of(harness).register(
            ProviderProfile(
                name="acme-openai",
                provider="openai",
                opts={"api_key": KEY, "base_url": stub.base_url},
            )
        )
        worker = harness.services[-1]
        assert isinstance(worker, Worker) and worker.registry is not None
        await worker.registry.wait_for(revision)
        session = await harness.fleet.create_agent(
            model="registry:acme-openai:gpt-test",
            # a session cannot redirect the profile's key to another server
            provider_opts={"base_url": elsewhere.base_url, "api_key": "sk-session"},
        )
        await session.prompt("hello")
        events = await until_end(session, timeout=30)
    assert events[-1].data["reason"] == "finished"
    assert events[-1].data["last_message"]["content"] == "from the profile's server"
    assert len(stub.requests) == 1 and not elsewhere.requests
    assert stub.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert stub.requests[0].body["model"] == "gpt-test"
    assert all(KEY not in e.model_dump_json() for e in events)
