"""Built-in plugins that work through the engine's PluginIO: event_logger, memory_loader,
memory_flush, auto_checkpoint, large_result_offload, content_policy, prompt_cache."""

from __future__ import annotations

from workers.plugins._base import Plugin

PLUGINS_B: tuple[type[Plugin], ...] = ()
