"""SkillGuard (CMDC built-in, priority 20): only the tools the active skills allow may run.

Skills come from `skills` (`[{name, allowed_tools}]`) and from the `SKILL.md` files found at
`session_start` under the workspace directories `skills_dirs` (the plugin's option, else the
session's `skills_dirs`, else `.flotilla/skills`), whose frontmatter names them:

    ---
    name: elixir-testing
    description: testing best practices
    allowed_tools:
      - read_file
      - grep
    ---

Discovery runs once, at `session_start`, on the session's real workspace (a checkpoint's
files are restored before it), so files the agent writes later cannot widen its own
allowance. Discovered skills are kept in the plugin state (given ones win on a name clash).
`active` names the skills in force (default: all); a named skill that was not found allows
nothing. The allowed tools are the union of the active skills' lists; an active skill
without `allowed_tools` leaves every tool allowed. At `before_tool` a tool outside the union
is blocked (`enforce_mode` "strict", the default) or only reported as a
`skill_tool_violation` plugin event ("warn").

The guard fails closed in strict mode: with no active skill (none given, none found) or
when its skills could not be read, every tool is blocked, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from schemas import canonical_tool_name
from workers.plugins._base import (
    Action,
    BlockTool,
    Emit,
    Hook,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
)
from workers.plugins._opts import known_keys

_OPTS = frozenset({"skills", "active", "enforce_mode", "skills_dirs"})
_MODES = ("strict", "warn")
DEFAULT_SKILLS_DIRS = (".flotilla/skills",)
SKILL_FILE = "SKILL.md"
_KEY_LINE = re.compile(r"([A-Za-z_][\w-]*)\s*:\s*(.*)")

Skill = dict[str, Any]
"""{"name": str, "allowed_tools": list[str] | None} (JSON, kept in the plugin state)."""


class SkillGuard(Plugin):
    """Blocks (or reports) tools that no active skill allows."""

    name = "skill_guard"
    priority = 20
    aliases = ("CMDC.Plugin.Builtin.SkillGuard",)

    skills: tuple[Skill, ...]
    active: frozenset[str] | None
    """The active skill names; None: every skill."""
    enforce_mode: str
    skills_dirs: tuple[str, ...]
    """Given in the options; empty: the session's `skills_dirs`, else DEFAULT_SKILLS_DIRS."""

    def configure(self, opts: Mapping[str, Any]) -> None:
        known_keys("skill_guard", opts, _OPTS)
        raw_skills = opts.get("skills", [])
        if not isinstance(raw_skills, list | tuple):
            raise PluginOptsError("skill_guard: skills must be a list of {name, allowed_tools}")
        skills = tuple(_skill(raw, i) for i, raw in enumerate(raw_skills))
        active = opts.get("active")
        if active is not None and not _strings(active):
            raise PluginOptsError("skill_guard: active must be a list of skill names or null")
        mode = opts.get("enforce_mode", "strict")
        if mode not in _MODES:
            raise PluginOptsError(
                f'skill_guard: enforce_mode must be "strict" or "warn", not {mode!r}'
            )
        dirs = opts.get("skills_dirs", [])
        if not _strings(dirs):
            raise PluginOptsError("skill_guard: skills_dirs must be a list of workspace paths")
        self.skills = skills
        self.active = frozenset(active) if active is not None else None
        self.enforce_mode = str(mode)
        self.skills_dirs = tuple(dirs)

    def initial_state(self) -> dict[str, Any]:
        return {"discovered": [], "unreadable": None}

    def directories(self, ctx: PluginContext) -> tuple[str, ...]:
        """Where SKILL.md files are discovered for this session."""
        return self.skills_dirs or ctx.skills_dirs or DEFAULT_SKILLS_DIRS

    def allowed_tools(self, state: Mapping[str, Any]) -> frozenset[str] | None:
        """The union of the active skills' tools; None when every tool is allowed (an active
        skill without a list). Empty when no skill is active: nothing is allowed."""
        given = {s["name"] for s in self.skills}
        found = [s for s in state.get("discovered", []) if s.get("name") not in given]
        active = [
            s for s in (*self.skills, *found) if self.active is None or s["name"] in self.active
        ]
        if any(s.get("allowed_tools") is None for s in active):
            return None
        return frozenset(t for s in active for t in s["allowed_tools"])

    async def handle_async(
        self,
        hook: Hook,
        payload: Mapping[str, Any],
        state: dict[str, Any],
        ctx: PluginContext,
        io: PluginIO,
    ) -> Action | None:
        if hook is Hook.SESSION_START:
            directories = self.directories(ctx)
            try:
                state["discovered"] = await discover_skills(io, directories)
            except Exception as exc:  # the workspace could not be read: fail closed below
                state["discovered"], state["unreadable"] = [], f"{type(exc).__name__}: {exc}"
            return None
        return self.handle(hook, payload, state, ctx)

    def handle(
        self, hook: Hook, payload: Mapping[str, Any], state: dict[str, Any], ctx: PluginContext
    ) -> Action | None:
        if hook is not Hook.BEFORE_TOOL:
            return None
        tool = canonical_tool_name(str(payload.get("name", "")))
        unreadable = state.get("unreadable")
        allowed = frozenset[str]() if unreadable else self.allowed_tools(state)
        if allowed is None or tool in allowed:
            return None
        if self.enforce_mode == "warn":
            return Emit(
                "skill_tool_violation",
                {"tool": tool, "call_id": payload.get("call_id"), "allowed": sorted(allowed)},
            )
        if unreadable:
            return BlockTool(f"the skills could not be read ({unreadable}); no tool may run")
        if not allowed:
            return BlockTool(
                f"tool {tool!r} is not allowed: no active skill was found "
                f"(skills_dirs: {', '.join(self.directories(ctx))})"
            )
        return BlockTool(
            f"tool {tool!r} is not allowed by the active skills; allowed: "
            + ", ".join(sorted(allowed))
        )


async def discover_skills(io: PluginIO, directories: Sequence[str]) -> list[Skill]:
    """The skills of the SKILL.md files under `directories` (files without a name skipped)."""
    skills: list[Skill] = []
    for directory in directories:
        for path in await io.find_files(directory, SKILL_FILE):
            text = await io.read_text(path)
            meta = parse_frontmatter(text or "")
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                continue
            tools = meta.get("allowed_tools", meta.get("allowed-tools"))
            if isinstance(tools, str):  # `allowed-tools: Read, Grep` (Claude's form)
                tools = [t for t in re.split(r"[,\s]+", tools) if t]
            allowed = [canonical_tool_name(t) for t in tools] if isinstance(tools, list) else None
            description = meta.get("description")
            skills.append(
                {
                    "name": name,
                    "description": description if isinstance(description, str) else "",
                    "allowed_tools": allowed,
                    "path": path,
                }
            )
    return skills


def parse_frontmatter(text: str) -> dict[str, str | list[str]]:
    """The `key: value` and `key:` + `- item` lines between the leading `---` fences.

    Deliberately small (no YAML dependency): scalars are strings with quotes removed, lists
    are `- item` lines or an inline `[a, b]`, a bare `key:` is absent; the rest is ignored.
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    meta: dict[str, str | list[str]] = {}
    key: str | None = None
    for line in lines[1:]:
        stripped = line.strip()
        if stripped == "---":
            break
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- ") or stripped == "-":
            if key is not None:
                items = meta.get(key)
                if not isinstance(items, list):
                    items = meta[key] = []
                items.append(_scalar(stripped[1:]))
            continue
        match = _KEY_LINE.fullmatch(stripped)
        if match is None:
            key = None
            continue
        key, value = match.group(1), match.group(2).strip()
        if value.startswith("[") and value.endswith("]"):
            meta[key] = [_scalar(v) for v in value[1:-1].split(",") if v.strip()]
        elif value:
            meta[key] = _scalar(value)
        # `key:` alone is null, as in YAML, unless `- item` lines follow
    return meta


def _scalar(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _skill(raw: object, index: int) -> Skill:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise PluginOptsError(f"skill_guard: skills[{index}] must be an object with a name")
    tools = raw.get("allowed_tools")
    if tools is not None and not _strings(tools):
        raise PluginOptsError(f"skill_guard: skills[{index}].allowed_tools must be a list or null")
    allowed = [canonical_tool_name(t) for t in tools] if tools is not None else None
    return {"name": raw["name"], "allowed_tools": allowed}


def _strings(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
