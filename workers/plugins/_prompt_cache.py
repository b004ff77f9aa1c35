"""PromptCache (CMDC built-in, priority 130): Anthropic prompt caching through litellm.

At each `before_request` of a session whose model's provider is in `providers` (default
"anthropic"), the plugin sets the request option `cache_control_injection_points`, litellm's
documented way to mark cache breakpoints: the system prompt, and with `cache_last_message`
the last message too, so the next request reuses the whole conversation so far. Providers that
cache on their own (OpenAI, DeepSeek) need no plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.plugins import _opts
from workers.plugins._base import Action, Hook, Plugin, PluginContext, PluginIO

NAME = "prompt_cache"
OPTION = "cache_control_injection_points"
SYSTEM_POINT: dict[str, Any] = {"location": "message", "role": "system"}
LAST_MESSAGE_POINT: dict[str, Any] = {"location": "message", "index": -1}


class PromptCache(Plugin):
    """Marks cache breakpoints on the requests of caching providers."""

    name = NAME
    priority = 130
    aliases = ("CMDC.Plugin.Builtin.PromptCache",)

    providers: frozenset[str]
    cache_last_message: bool

    def configure(self, opts: Mapping[str, Any]) -> None:
        _opts.known_keys(NAME, opts, ("providers", "cache_last_message"))
        providers = _opts.strings(NAME, opts, "providers", ["anthropic"])
        self.providers = frozenset(providers)
        self.cache_last_message = _opts.flag(NAME, opts, "cache_last_message", True)

    def injection_points(self) -> list[dict[str, Any]]:
        """The value of the request option."""
        points = [dict(SYSTEM_POINT)]
        if self.cache_last_message:
            points.append(dict(LAST_MESSAGE_POINT))
        return points

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook is Hook.BEFORE_REQUEST and ctx.model.partition(":")[0] in self.providers:
            io.set_request_option(OPTION, self.injection_points())
        return None
