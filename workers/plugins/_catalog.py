"""The built-in plugins: the guards, those that shape requests and results, then those that
observe or persist through the engine's PluginIO. (A session's plugins run in the order it
names them; this order is only the one listings show.)"""

from __future__ import annotations

from workers.plugins._auto_checkpoint import AutoCheckpoint
from workers.plugins._base import Plugin
from workers.plugins._content_policy import ContentPolicy
from workers.plugins._cost_guard import CostGuard
from workers.plugins._event_logger import EventLogger
from workers.plugins._human_approval import HumanApproval
from workers.plugins._large_result_offload import LargeResultOffload
from workers.plugins._memory_flush import MemoryFlush
from workers.plugins._memory_loader import MemoryLoader
from workers.plugins._model_router import ModelRouter
from workers.plugins._patch_tool_calls import PatchToolCalls
from workers.plugins._planning import Planning
from workers.plugins._prompt_cache import PromptCache
from workers.plugins._reflection import Reflection
from workers.plugins._security_guard import SecurityGuard
from workers.plugins._skill_guard import SkillGuard

BUILTIN_PLUGINS: tuple[type[Plugin], ...] = (
    SecurityGuard,
    HumanApproval,
    SkillGuard,
    PatchToolCalls,
    ModelRouter,
    CostGuard,
    Planning,
    Reflection,
    EventLogger,
    MemoryLoader,
    MemoryFlush,
    AutoCheckpoint,
    LargeResultOffload,
    ContentPolicy,
    PromptCache,
)
