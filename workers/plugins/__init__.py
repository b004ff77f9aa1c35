"""Plugins: CMDC's hook x action contract, the chain that runs it, the built-in plugins.

Pure logic, no I/O: the turn engine calls `PluginChain.run` at each hook and acts on the
`ChainOutcome`. Errors:

ValueError
├── PluginOptsError    a plugin refused its options (at load or on update_plugin_opts)
└── PluginLoadError    a plugin spec cannot be loaded (unknown name, bad path, bad opts...)

A plugin that crashes at a hook is not an error: it becomes an `Incident` of the outcome.
"""

from workers.plugins._auto_checkpoint import AutoCheckpoint
from workers.plugins._base import (
    ACTION_TYPES,
    ALLOWED,
    Abort,
    Action,
    BlockTool,
    Continue,
    Emit,
    Hook,
    Intervene,
    Plugin,
    PluginContext,
    PluginIO,
    PluginOptsError,
    ReplaceToolArgs,
    RequireApproval,
    Skip,
    SwitchModel,
    Terminal,
)
from workers.plugins._catalog import BUILTIN_PLUGINS
from workers.plugins._chain import ChainOutcome, Emitted, Incident, PluginChain
from workers.plugins._content_policy import ContentPolicy
from workers.plugins._cost_guard import CostGuard
from workers.plugins._event_logger import EventLogger
from workers.plugins._human_approval import HumanApproval, describe_call
from workers.plugins._large_result_offload import LargeResultOffload
from workers.plugins._loader import (
    PluginLoadError,
    PluginSpecLike,
    load_plugins,
    plugin_registry,
)
from workers.plugins._memory_flush import MemoryFlush
from workers.plugins._memory_loader import MemoryLoader
from workers.plugins._model_router import ModelRouter
from workers.plugins._patch_tool_calls import PatchToolCalls
from workers.plugins._planning import Planning
from workers.plugins._prompt_cache import PromptCache
from workers.plugins._reflection import Reflection
from workers.plugins._security_guard import SecurityGuard
from workers.plugins._shell import (
    MAX_SHELL_CHARS,
    ShellSegment,
    command_families,
    command_family,
    shell_segments,
)
from workers.plugins._skill_guard import SkillGuard, discover_skills

__all__ = [
    "ACTION_TYPES",
    "ALLOWED",
    "BUILTIN_PLUGINS",
    "MAX_SHELL_CHARS",
    "Abort",
    "Action",
    "AutoCheckpoint",
    "BlockTool",
    "ChainOutcome",
    "ContentPolicy",
    "Continue",
    "CostGuard",
    "Emit",
    "Emitted",
    "EventLogger",
    "Hook",
    "HumanApproval",
    "Incident",
    "Intervene",
    "LargeResultOffload",
    "MemoryFlush",
    "MemoryLoader",
    "ModelRouter",
    "PatchToolCalls",
    "Planning",
    "Plugin",
    "PluginChain",
    "PluginContext",
    "PluginIO",
    "PluginLoadError",
    "PluginOptsError",
    "PluginSpecLike",
    "PromptCache",
    "Reflection",
    "ReplaceToolArgs",
    "RequireApproval",
    "SecurityGuard",
    "ShellSegment",
    "SkillGuard",
    "Skip",
    "SwitchModel",
    "Terminal",
    "command_families",
    "command_family",
    "describe_call",
    "discover_skills",
    "load_plugins",
    "plugin_registry",
    "shell_segments",
]
