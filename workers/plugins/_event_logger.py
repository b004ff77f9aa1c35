"""EventLogger (CMDC built-in, priority 50): every hook as one JSON line in the workspace.

Each line is `{ts, hook, session_id, turn, payload}` appended to `path` (JSON Lines, default
`.flotilla/events.jsonl`). The payload is a summary, never a copy: keys that name secrets
(`schemas.is_secret_opt`, and password / authorization / cookie) are dropped at any depth,
`NAME_KEY=value` / `token: value` / `Bearer value` inside strings (a shell command's env) are
masked, message lists become their count, long strings and lists are cut. `level` "debug" keeps
longer values than "info". When the file would pass `max_chars` its older half is dropped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from schemas import is_secret_opt
from workers.plugins import _opts
from workers.plugins._base import Action, Hook, Plugin, PluginContext, PluginIO, PluginOptsError

NAME = "event_logger"
DEFAULT_PATH = ".flotilla/events.jsonl"
_LEVELS: Mapping[str, tuple[int, int]] = {"info": (200, 5), "debug": (2000, 50)}
"""level -> (characters kept of a string, items kept of a list)."""
_SECRET_WORDS = ("password", "passwd", "authorization", "cookie", "secret")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([\w-]*(?:key|token|secret|password|passwd))(\s*[=:]\s*)([\'\"]?)[^\s\'\"&;,]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+")
_MESSAGE_LISTS = frozenset({"messages", "messages_diff"})
_MAX_DEPTH = 4


class EventLogger(Plugin):
    """Appends a JSON line per hook to a workspace file."""

    name = NAME
    priority = 50
    aliases = ("CMDC.Plugin.Builtin.EventLogger",)

    path: str
    hooks: frozenset[Hook]
    level: str
    max_chars: int

    def configure(self, opts: Mapping[str, Any]) -> None:
        _opts.known_keys(NAME, opts, ("path", "hooks", "level", "max_chars"))
        path = _opts.workspace_path(
            NAME, "path", _opts.text(NAME, opts, "path", DEFAULT_PATH) or ""
        )
        known = {h.value: h for h in Hook}
        names = _opts.strings(NAME, opts, "hooks", list(known))
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise PluginOptsError(f"{NAME}: hooks must name hooks ({', '.join(known)}); {unknown}")
        level = opts.get("level", "info")
        if level not in _LEVELS:
            raise PluginOptsError(f'{NAME}: level must be "info" or "debug", not {level!r}')
        max_chars = _opts.positive_int(NAME, opts, "max_chars", 1_000_000, minimum=10_000)
        self.path, self.hooks, self.level = path, frozenset(known[n] for n in names), str(level)
        self.max_chars = max_chars

    def line(self, hook: Hook, payload: Mapping[str, Any], ctx: PluginContext) -> str:
        """The JSON line of one hook call."""
        record = {
            "ts": int(time.time() * 1000),
            "hook": hook.value,
            "session_id": ctx.session_id,
            "turn": ctx.turn,
            "payload": summarize(payload, self.level),
        }
        return orjson.dumps(record, default=str).decode() + "\n"

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook not in self.hooks:
            return None
        line = self.line(hook, payload, ctx)
        existing = (await io.read_text(self.path)) or ""
        if len(existing) + len(line) > self.max_chars:
            kept = existing[-(self.max_chars // 2) :]
            existing = kept[kept.find("\n") + 1 :]  # from a whole line on
        await io.write_text(self.path, existing + line)
        state["lines"] = int(state.get("lines", 0)) + 1
        return None


def is_secret_key(key: str) -> bool:
    """Whether a payload key names a secret (its value is never logged)."""
    lowered = key.lower()
    return is_secret_opt(lowered) or any(word in lowered for word in _SECRET_WORDS)


def summarize(value: Any, level: str = "info", depth: int = 0) -> Any:
    """A loggable summary of a hook payload: no secret keys, bounded strings and lists."""
    chars, items = _LEVELS[level]
    if isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            return f"{{{len(value)} keys}}"
        return {
            str(k): (
                {"count": len(v)}
                if k in _MESSAGE_LISTS and isinstance(v, list)
                else summarize(v, level, depth + 1)
            )
            for k, v in value.items()
            if not (isinstance(k, str) and is_secret_key(k))
        }
    if isinstance(value, list | tuple):
        head = [summarize(v, level, depth + 1) for v in value[:items]]
        return [*head, f"… {len(value) - items} more"] if len(value) > items else head
    if isinstance(value, str):
        text = _BEARER.sub(r"\1 ***", _SECRET_ASSIGNMENT.sub(r"\1\2\3***", value))
        return text if len(text) <= chars else f"{text[:chars]}… ({len(text)} chars)"
    if value is None or isinstance(value, bool | int | float):
        return value
    return summarize(str(value), level, depth)
