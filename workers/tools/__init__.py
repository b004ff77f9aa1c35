"""Tools of the turn engine: the Tool port, CMDC's built-ins, the session workspace.

A tool call gets a `ToolContext` whose `workspace` follows the session from worker to worker
(`open_workspace`); results longer than the budget go through `offload`.
"""

from workers.tools._base import (
    AskUserEffect,
    CompactEffect,
    Effect,
    SubagentEffect,
    TodosEffect,
    Tool,
    ToolContext,
    ToolResult,
    ToolSpec,
)
from workers.tools._catalog import BUILTIN_TOOL_NAMES, ToolCatalog, validate_args
from workers.tools._offload import offload
from workers.tools._workspace import Entry, Workspace, WorkspaceError, normalize, open_workspace

__all__ = [
    "BUILTIN_TOOL_NAMES",
    "AskUserEffect",
    "CompactEffect",
    "Effect",
    "Entry",
    "SubagentEffect",
    "TodosEffect",
    "Tool",
    "ToolCatalog",
    "ToolContext",
    "ToolResult",
    "ToolSpec",
    "Workspace",
    "WorkspaceError",
    "normalize",
    "offload",
    "open_workspace",
    "validate_args",
]
