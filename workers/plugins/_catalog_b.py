"""Built-in plugins that work through the engine's PluginIO: event_logger, memory_loader,
memory_flush, auto_checkpoint, large_result_offload, content_policy, prompt_cache."""

from __future__ import annotations

from workers.plugins._auto_checkpoint import AutoCheckpoint
from workers.plugins._base import Plugin
from workers.plugins._content_policy import ContentPolicy
from workers.plugins._event_logger import EventLogger
from workers.plugins._large_result_offload import LargeResultOffload
from workers.plugins._memory_flush import MemoryFlush
from workers.plugins._memory_loader import MemoryLoader
from workers.plugins._prompt_cache import PromptCache

PLUGINS_B: tuple[type[Plugin], ...] = (
    EventLogger,
    MemoryLoader,
    MemoryFlush,
    AutoCheckpoint,
    LargeResultOffload,
    ContentPolicy,
    PromptCache,
)
