"""The tools a worker can offer: CMDC's built-ins plus the operator's custom Python tools.

Custom tools are named by import path in `settings.custom_tools` and loaded once, at start:
a wrong path stops the worker with a ConfigurationError instead of failing calls later.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from flotilla.errors import ConfigurationError
from flotilla.runtime import load_object
from flotilla.settings import Settings
from workers.tools._base import Tool, ToolSpec
from workers.tools._engine_tools import AskUser, CompactConversation, Task, WriteTodos
from workers.tools._files import EditFile, Glob, Grep, ListDir, ReadFile, WriteFile
from workers.tools._shell import Shell

__all__ = ["BUILTIN_TOOL_NAMES", "ToolCatalog", "validate_args"]

BUILTIN_TOOL_NAMES: tuple[str, ...] = (
    "read_file",
    "write_file",
    "edit_file",
    "shell",
    "grep",
    "list_dir",
    "glob",
    "task",
    "write_todos",
    "ask_user",
    "compact_conversation",
)
_CMDC_ALIAS = re.compile(r"^CMDC\.Tool\.([A-Z][A-Za-z]*)$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_VALIDATORS = 512


class ToolCatalog:
    """Looks tools up by name; CMDC module names (`CMDC.Tool.ReadFile`) are aliases."""

    def __init__(self, settings: Settings) -> None:
        builtins: list[Tool] = [
            ReadFile(),
            WriteFile(),
            EditFile(),
            Shell(max_timeout_s=settings.tool_timeout_s),
            Grep(),
            ListDir(),
            Glob(),
            Task(),
            WriteTodos(),
            AskUser(),
            CompactConversation(),
        ]
        self._tools: dict[str, Tool] = {t.spec.name: t for t in builtins}
        for path in settings.custom_tools:
            tool = load_tool(path)
            if tool.spec.name in self._tools:
                raise ConfigurationError(
                    f"custom tool {path!r} is named {tool.spec.name!r}, like a tool already loaded"
                )
            self._tools[tool.spec.name] = tool

    def get(self, name: str) -> Tool | None:
        """The tool called `name` (or its CMDC alias), None when there is none."""
        alias = _CMDC_ALIAS.match(name)
        if alias is not None:
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", alias.group(1)).lower()
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Built-in names in CMDC's order, then custom tools in configuration order."""
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """Every tool's spec, in the order of `names()`."""
        return [t.spec for t in self._tools.values()]


def load_tool(path: str) -> Tool:
    """The tool at `package.module:attr`: a Tool instance, or a zero-argument class/factory."""
    target: Any = load_object(path, what="custom tool")
    if inspect.isclass(target) or not _is_tool(target):
        if not callable(target):
            raise ConfigurationError(f"custom tool {path!r} is neither a tool nor a factory")
        try:
            target = target()
        except Exception as exc:
            raise ConfigurationError(f"custom tool {path!r}: creating it failed: {exc}") from exc
    if not _is_tool(target):
        raise ConfigurationError(
            f"custom tool {path!r} has no `spec: ToolSpec` and `async def run(args, ctx)`"
        )
    spec: ToolSpec = target.spec
    if not _TOOL_NAME.match(spec.name):
        raise ConfigurationError(f"custom tool {path!r}: name {spec.name!r} is not [A-Za-z0-9_-]")
    try:
        _validator(spec)
    except schema_errors.SchemaError as exc:
        raise ConfigurationError(
            f"custom tool {path!r}: bad parameters schema: {exc.message}"
        ) from exc
    return target  # type: ignore[no-any-return]


def _is_tool(candidate: object) -> bool:
    spec = getattr(candidate, "spec", None)
    return isinstance(spec, ToolSpec) and inspect.iscoroutinefunction(
        getattr(candidate, "run", None)
    )


_validators: dict[int, tuple[ToolSpec, Any]] = {}


def _validator(spec: ToolSpec) -> Any:
    """The spec's checked validator; kept per spec object (held, so its id stays unique)."""
    cached = _validators.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    cls = validators.validator_for(spec.parameters, default=validators.Draft202012Validator)
    cls.check_schema(spec.parameters)
    validator = cls(spec.parameters)
    if len(_validators) >= _MAX_VALIDATORS:
        del _validators[next(iter(_validators))]
    _validators[id(spec)] = (spec, validator)
    return validator


def validate_args(spec: ToolSpec, args: object) -> str | None:
    """None when `args` satisfy the spec's JSON Schema, else a one-line message for the LLM.

    The message names the offending argument (`offset: 0 is less than the minimum of 1`)
    and not the tool, so callers can prefix it as they see fit.
    """
    try:
        validator = _validator(spec)
    except schema_errors.SchemaError as exc:
        return f"tool {spec.name} has an invalid parameters schema: {_one_line(exc.message)}"
    error = schema_errors.best_match(validator.iter_errors(args))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return _one_line(f"{where}: {error.message}" if where else error.message)


def _one_line(message: str, limit: int = 300) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
