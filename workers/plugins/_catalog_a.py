"""Built-in plugins without I/O of their own: model_router, cost_guard, patch_tool_calls,
planning, reflection, skill_guard."""

from __future__ import annotations

from workers.plugins._base import Plugin
from workers.plugins._cost_guard import CostGuard
from workers.plugins._model_router import ModelRouter
from workers.plugins._patch_tool_calls import PatchToolCalls
from workers.plugins._planning import Planning
from workers.plugins._reflection import Reflection
from workers.plugins._skill_guard import SkillGuard

PLUGINS_A: tuple[type[Plugin], ...] = (
    SkillGuard,
    PatchToolCalls,
    ModelRouter,
    CostGuard,
    Planning,
    Reflection,
)
