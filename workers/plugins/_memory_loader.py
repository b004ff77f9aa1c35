"""MemoryLoader (CMDC built-in, priority 100): workspace memory files in the system prompt.

At `session_start` the plugin reads `files` (AGENTS.md, MEMORY.md) and sets the "memory"
section of the system prompt to their text. When nothing was found then (a new workspace; a
session restored from a checkpoint, whose files are copied in after `session_start`) it tries
again at the first request of each later turn. With `refresh: "turn"` it re-reads the files
at the first request of every turn, so facts MemoryFlush appends show up in the same session.
"""

from __future__ import annotations

import hashlib
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

NAME = "memory_loader"
SECTION = "memory"
"""The key of the system prompt section (`state.system_context`)."""
DEFAULT_FILES = ("AGENTS.md", "MEMORY.md")
_REFRESH = ("session", "turn")
_TRUNCATED = "\n[… truncated]"


class MemoryLoader(Plugin):
    """Loads memory files into the "memory" section of the system prompt."""

    name = NAME
    priority = 100
    aliases = ("CMDC.Plugin.Builtin.MemoryLoader",)

    files: tuple[str, ...]
    max_chars: int
    """The bound of the whole section; each file gets an equal share of it."""
    refresh: str

    def configure(self, opts: Mapping[str, Any]) -> None:
        _opts.known_keys(NAME, opts, ("files", "max_chars", "refresh"))
        files = _opts.strings(NAME, opts, "files", list(DEFAULT_FILES))
        if not files:
            raise PluginOptsError(f"{NAME}: files must name at least one file")
        paths = tuple(_opts.workspace_path(NAME, "files", f) for f in files)
        max_chars = _opts.positive_int(NAME, opts, "max_chars", 16_000, minimum=200)
        refresh = opts.get("refresh", "session")
        if refresh not in _REFRESH:
            raise PluginOptsError(f'{NAME}: refresh must be "session" or "turn"')
        self.files, self.max_chars, self.refresh = paths, max_chars, str(refresh)

    def on_config_update(self, opts: Mapping[str, Any], state: dict[str, Any]) -> bool:
        self.configure({**self.opts, **opts})
        state["checked_turn"] = None  # other files or bounds: read them at the next request
        state["loaded"] = False
        return True

    def initial_state(self) -> dict[str, Any]:
        return {"loaded": False, "checked_turn": None, "digest": None}

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook is Hook.SESSION_START:
            return await self._load(state, ctx, io)
        stale = self.refresh == "turn" or not state.get("loaded")
        if hook is Hook.BEFORE_REQUEST and stale and state.get("checked_turn") != ctx.turn:
            return await self._load(state, ctx, io)
        return None

    async def _load(self, state: dict[str, Any], ctx: PluginContext, io: PluginIO) -> Emit | None:
        state["checked_turn"] = ctx.turn
        found = [(path, text) for path in self.files if (text := await io.read_text(path))]
        found = [(path, text.strip()) for path, text in found if text.strip()]
        state["loaded"] = bool(found)
        section = self.section(found) if found else None
        digest = hashlib.sha256(section.encode()).hexdigest()[:16] if section else None
        if digest == state.get("digest"):
            return None
        state["digest"] = digest
        io.set_system_context(SECTION, section)
        if section is None:
            return None
        return Emit("memory_loaded", {"files": [p for p, _ in found], "chars": len(section)})

    def section(self, found: list[tuple[str, str]]) -> str:
        """The system prompt section for the files found, within `max_chars`."""
        share = max(0, self.max_chars // len(found) - 40 - len(_TRUNCATED))  # room for headings
        parts = ["# Memory (from the workspace)"]
        for path, text in found:
            body = text if len(text) <= share else text[:share] + _TRUNCATED
            parts.append(f"## {path}\n{body}")
        return "\n\n".join(parts)[: self.max_chars]
