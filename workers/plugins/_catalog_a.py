"""Built-in plugins without I/O of their own: model_router, cost_guard, patch_tool_calls,
planning, reflection, skill_guard."""

from __future__ import annotations

from workers.plugins._base import Plugin

PLUGINS_A: tuple[type[Plugin], ...] = ()
