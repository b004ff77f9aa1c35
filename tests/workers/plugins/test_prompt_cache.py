"""PromptCache: litellm's cache_control_injection_points on requests to caching providers."""

from __future__ import annotations

import dataclasses

from tests.workers.plugins.memory_io import MemoryIO
from workers.plugins import Hook, PluginChain, PluginContext, PromptCache

POINTS = [{"location": "message", "role": "system"}, {"location": "message", "index": -1}]


async def test_anthropic_requests_get_injection_points(ctx: PluginContext) -> None:
    io = MemoryIO()
    claude = dataclasses.replace(ctx, model="anthropic:claude-sonnet-4-5")
    await PluginChain([PromptCache({})]).run(Hook.BEFORE_REQUEST, {}, {}, claude, io)
    assert io.request_options == {"cache_control_injection_points": POINTS}


async def test_other_providers_and_hooks_are_left_alone(ctx: PluginContext) -> None:
    io = MemoryIO()
    chain = PluginChain([PromptCache({})])
    await chain.run(Hook.BEFORE_REQUEST, {}, {}, dataclasses.replace(ctx, model="openai:x"), io)
    claude = dataclasses.replace(ctx, model="anthropic:claude")
    await chain.run(Hook.AFTER_RESPONSE, {"message": {}}, {}, claude, io)
    assert io.request_options == {}


async def test_providers_and_the_last_message_point_are_options(ctx: PluginContext) -> None:
    io = MemoryIO()
    plugin = PromptCache({"providers": ["bedrock"], "cache_last_message": False})
    bedrock = dataclasses.replace(ctx, model="bedrock:claude")
    await PluginChain([plugin]).run(Hook.BEFORE_REQUEST, {}, {}, bedrock, io)
    assert io.request_options["cache_control_injection_points"] == POINTS[:1]
