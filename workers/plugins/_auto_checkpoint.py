"""AutoCheckpoint (CMDC built-in, v0.5): save a checkpoint when a trigger fires.

Triggers, any of which saves (seeds/000 recipe 6.1): every `every_n_turns` turns, finished
or aborted (`after_turn`), after a successful call of a tool in `on_tools` (`after_tool`), at
the hooks named in `on_events` (e.g. "session_end": the last copy of a stopped session).
Each save is a `checkpoint_saved` event with label "auto" and metadata {trigger, plugin,
turn}, followed by `auto_checkpoint_saved {checkpoint_id, trigger}`.

`max_checkpoints` (how many the session keeps, oldest dropped) and `ttl_seconds` (how long
each lives) lower the fleet's limits (`FLOTILLA_MAX_CHECKPOINTS`, `FLOTILLA_CHECKPOINT_TTL_S`)
for this session; they never raise them. Checkpoints are kept by the fleet (Redis): CMDC's
`backend` option is refused, and so are event names in `on_events` (hooks only, for now).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.plugins import _opts
from workers.plugins._base import (
    Action,
    Emit,
    Hook,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
)

NAME = "auto_checkpoint"
LABEL = "auto"
_OPTS = ("every_n_turns", "on_tools", "on_events", "max_checkpoints", "ttl_seconds")
_REFUSED = {
    "backend": (
        "checkpoints are kept by the fleet in Redis (FLOTILLA_CHECKPOINT_TTL_S, "
        "FLOTILLA_MAX_CHECKPOINTS); a per-session backend is not supported"
    )
}


class AutoCheckpoint(Plugin):
    """Checkpoints the session every N turns, after key tools, at chosen hooks."""

    name = NAME
    priority = 900  # after the plugins that change the session at the same hook
    aliases = ("CMDC.Plugin.Builtin.AutoCheckpoint",)

    every_n_turns: int | None
    on_tools: frozenset[str]
    on_events: frozenset[Hook]
    max_checkpoints: int | None
    ttl_seconds: int | None

    def configure(self, opts: Mapping[str, Any]) -> None:
        for key, why in _REFUSED.items():
            if key in opts:
                raise PluginOptsError(f"{NAME}: {key}: {why}")
        _opts.known_keys(NAME, opts, _OPTS)
        every = _opts.optional_positive_int(NAME, opts, "every_n_turns", 10)
        tools = _opts.strings(NAME, opts, "on_tools", [])
        events = _opts.strings(NAME, opts, "on_events", [])
        hooks = {h.value: h for h in Hook}
        unknown = sorted(e for e in events if e.lstrip(":") not in hooks)
        if unknown:
            raise PluginOptsError(
                f"{NAME}: on_events names hooks ({', '.join(hooks)}); event names such as "
                f"{unknown[0]!r} are not supported yet"
            )
        max_checkpoints = _opts.optional_positive_int(NAME, opts, "max_checkpoints", None)
        ttl_seconds = _opts.optional_positive_int(NAME, opts, "ttl_seconds", None)
        self.every_n_turns = every
        self.on_tools = frozenset(tools)
        self.on_events = frozenset(hooks[e.lstrip(":")] for e in events)
        self.max_checkpoints, self.ttl_seconds = max_checkpoints, ttl_seconds

    def initial_state(self) -> dict[str, Any]:
        return {"turns": 0, "saved": 0, "last_checkpoint_id": None}

    def trigger(self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any]) -> str | None:
        """What makes this hook save a checkpoint, if anything (counts the turns)."""
        if hook is Hook.AFTER_TURN:
            state["turns"] = int(state.get("turns", 0)) + 1
            if self.every_n_turns and state["turns"] % self.every_n_turns == 0:
                return "every_n_turns"
        if hook is Hook.AFTER_TOOL and not payload.get("is_error"):
            tool = str(payload.get("name", ""))
            if tool in self.on_tools:
                return f"tool:{tool}"
        if hook in self.on_events:
            return hook.value
        return None

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        trigger = self.trigger(hook, payload, state)
        if trigger is None:
            return None
        checkpoint_id = await io.checkpoint(
            LABEL,
            {"trigger": trigger, "plugin": NAME, "turn": ctx.turn},
            keep=self.max_checkpoints,
            ttl_s=self.ttl_seconds,
        )
        state["saved"] = int(state.get("saved", 0)) + 1
        state["last_checkpoint_id"] = checkpoint_id
        return Emit("auto_checkpoint_saved", {"checkpoint_id": checkpoint_id, "trigger": trigger})
