"""A plugin for engine tests: answers each hook with the action its options name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.plugins import (
    Abort,
    Action,
    BlockTool,
    Emit,
    Hook,
    Intervene,
    Plugin,
    PluginContext,
    ReplaceToolArgs,
    Skip,
    SwitchModel,
)


class ScriptedPlugin(Plugin):
    """opts: `{"actions": {hook: {"kind": ..., ...}}, "crash_on": [hook, ...]}`; each action
    is answered once per turn (a count in the plugin's persisted state)."""

    name = "scripted"
    priority = 50

    def configure(self, opts: Mapping[str, Any]) -> None:
        self.actions: dict[str, dict[str, Any]] = dict(opts.get("actions", {}))
        self.crash_on: list[str] = list(opts.get("crash_on", []))

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if str(hook) in self.crash_on:
            raise RuntimeError(f"boom at {hook}")
        spec = self.actions.get(str(hook))
        fired = state.setdefault("fired", {})
        if spec is None or fired.get(str(hook), 0) >= int(spec.get("times", 1)):
            return None
        fired[str(hook)] = fired.get(str(hook), 0) + 1
        kind = spec["kind"]
        if kind == "intervene":
            return Intervene(spec["prompt"])
        if kind == "abort":
            return Abort(spec["reason"])
        if kind == "skip":
            return Skip()
        if kind == "block_tool":
            return BlockTool(spec["reason"])
        if kind == "replace_tool_args":
            return ReplaceToolArgs(spec["args"])
        if kind == "emit":
            return Emit(spec["type"], spec.get("data", {}))
        if kind == "switch_model":
            return SwitchModel(spec["model"])
        raise ValueError(kind)
