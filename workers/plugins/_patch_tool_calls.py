"""PatchToolCalls (CMDC built-in, priority 120): answers tool calls left without a result.

A history given at `create` (or cut short elsewhere) may hold assistant `tool_calls` with no
`tool_result` after them, which providers refuse. At `before_request` each such call gets a
synthetic error result, inserted right after the assistant message that made it, so the
request that follows (and the stored history) is well formed; a `tool_calls_patched` plugin
event lists the calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workers.plugins._base import (
    Action,
    Emit,
    Hook,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset({"message"})
DEFAULT_MESSAGE = "Tool call cancelled: it has no result (the conversation moved on without it)."


class PatchToolCalls(Plugin):
    """Gives dangling tool calls an error result before each LLM request."""

    name = "patch_tool_calls"
    priority = 120
    aliases = ("CMDC.Plugin.Builtin.PatchToolCalls",)

    message: str

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("patch_tool_calls", opts, _OPTS)
        message = opts.get("message", DEFAULT_MESSAGE)
        if not isinstance(message, str) or not message:
            raise PluginOptsError("patch_tool_calls: message must be a non-empty string")
        self.message = message

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook is not Hook.BEFORE_REQUEST:
            return None
        messages = payload.get("messages")
        dangling = dangling_calls(messages if isinstance(messages, list) else [])
        if not dangling:
            return None
        io.patch_history(
            [
                {
                    "role": "tool_result",
                    "call_id": call_id,
                    "name": name,
                    "content": self.message,
                    "is_error": True,
                }
                for call_id, name in dangling
            ]
        )
        return Emit(
            "tool_calls_patched",
            {"calls": [{"call_id": c, "name": n} for c, n in dangling], "count": len(dangling)},
        )


def dangling_calls(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(call_id, name) of every assistant tool call that no tool_result answers."""
    answered = {str(m.get("call_id")) for m in messages if m.get("role") == "tool_result"}
    dangling: list[tuple[str, str]] = []
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for call in message.get("tool_calls") or []:
            if not isinstance(call, Mapping):
                continue
            call_id = str(call.get("call_id") or call.get("id") or "")
            if call_id and call_id not in answered:
                dangling.append((call_id, str(call.get("name") or "")))
    return dangling
