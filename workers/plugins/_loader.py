"""load_plugins: turns a session's plugin specs into plugin instances.

A spec is a name or `{name, opts}`. Names are built-in short names (`human_approval`), CMDC
module names (`CMDC.Plugin.Builtin.HumanApproval`), names of the fleet's `custom_plugins`,
or an import path `package.module:ClassName` of a Plugin subclass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from flotilla.errors import ConfigurationError
from flotilla.runtime import load_object
from workers.plugins._base import Plugin, PluginOptsError
from workers.plugins._catalog import BUILTIN_PLUGINS


class PluginLoadError(ValueError):
    """A plugin spec cannot be loaded; the message names the spec and the reason."""


class NamedSpec(Protocol):
    """A spec object with `name` and `opts` (schemas.PluginSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def opts(self) -> Mapping[str, Any]: ...


PluginSpecLike = str | Mapping[str, Any] | NamedSpec


def load_plugins(
    specs: Sequence[PluginSpecLike], *, extra: Sequence[str] = (), import_paths: bool = True
) -> list[Plugin]:
    """Instantiate the plugins of `specs`; `extra` are the fleet's custom plugin paths.

    `import_paths=False` refuses `package.module:ClassName` specs that are not in `extra`.
    """
    registry = plugin_registry(extra)
    plugins: list[Plugin] = []
    for spec in specs:
        name, opts = _parse(spec)
        cls = _resolve(name, registry, import_paths=import_paths)
        if any(p.name == cls.name for p in plugins):
            raise PluginLoadError(f"plugin {name!r}: duplicate ({cls.name} is already loaded)")
        try:
            plugin = cls(opts)
            orjson.dumps(plugin.initial_state())
        except PluginOptsError as exc:
            raise PluginLoadError(f"plugin {name!r}: invalid opts: {exc}") from exc
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {name!r}: failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        plugins.append(plugin)
    return plugins


def plugin_registry(extra: Sequence[str] = ()) -> dict[str, type[Plugin]]:
    """Every loadable plugin class by name and alias: built-ins, then `extra` import paths."""
    registry: dict[str, type[Plugin]] = {}
    for cls in (*BUILTIN_PLUGINS, *(_import(path) for path in extra)):
        for key in (cls.name, *cls.aliases):
            taken = registry.get(key)
            if taken is not None and taken is not cls:
                raise PluginLoadError(
                    f"plugin {cls.__module__}:{cls.__qualname__}: name {key!r} is already "
                    f"taken by {taken.__module__}:{taken.__qualname__}"
                )
            registry[key] = cls
    return registry


def _parse(spec: PluginSpecLike) -> tuple[str, Mapping[str, Any]]:
    if isinstance(spec, str):
        name: object = spec
        opts: object = {}
    elif isinstance(spec, Mapping):
        name, opts = spec.get("name"), spec.get("opts") or {}
    else:
        name, opts = spec.name, spec.opts
    if not isinstance(name, str) or not name:
        raise PluginLoadError(f"plugin spec {spec!r}: name must be a non-empty string")
    if not isinstance(opts, Mapping):
        raise PluginLoadError(f"plugin {name!r}: opts must be an object")
    return name, opts


def _resolve(
    name: str, registry: Mapping[str, type[Plugin]], *, import_paths: bool
) -> type[Plugin]:
    cls = registry.get(name)
    if cls is not None:
        return cls
    if ":" in name:
        if not import_paths:
            raise PluginLoadError(f"plugin {name!r}: import paths are not allowed here")
        return _import(name)
    known = ", ".join(sorted({c.name for c in registry.values()}))
    raise PluginLoadError(f"unknown plugin {name!r}; known: {known}")


def _import(path: str) -> type[Plugin]:
    try:
        target = load_object(path, what="plugin")
    except ConfigurationError as exc:
        raise PluginLoadError(str(exc)) from exc
    if not isinstance(target, type) or not issubclass(target, Plugin):
        raise PluginLoadError(f"plugin {path!r}: not a subclass of workers.plugins.Plugin")
    name = getattr(target, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginLoadError(f"plugin {path!r}: the class sets no `name`")
    if isinstance(target.priority, bool) or not isinstance(target.priority, int):
        raise PluginLoadError(f"plugin {path!r}: `priority` must be an integer")
    return target
