"""Checks shared by the built-in plugins' `configure`: each raises PluginOptsError naming
the plugin and the option, before the plugin changes anything."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from workers.plugins._base import PluginOptsError


def known_keys(plugin: str, opts: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Refuse options the plugin does not know."""
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise PluginOptsError(f"{plugin}: unknown options {unknown}")


def strings(plugin: str, opts: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    """A list of strings (an empty list is fine)."""
    value = opts.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PluginOptsError(f"{plugin}: {key} must be a list of strings")
    return list(value)


def positive_int(
    plugin: str, opts: Mapping[str, Any], key: str, default: int, *, minimum: int = 1
) -> int:
    """An integer of at least `minimum`."""
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PluginOptsError(f"{plugin}: {key} must be an integer >= {minimum}, not {value!r}")
    return value


def optional_positive_int(
    plugin: str, opts: Mapping[str, Any], key: str, default: int | None
) -> int | None:
    """A positive integer, or None (which turns something off)."""
    if opts.get(key, default) is None:
        return None
    return positive_int(plugin, {key: opts.get(key, default)}, key, 1)


def flag(plugin: str, opts: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean."""
    value = opts.get(key, default)
    if not isinstance(value, bool):
        raise PluginOptsError(f"{plugin}: {key} must be true or false, not {value!r}")
    return value


def text(plugin: str, opts: Mapping[str, Any], key: str, default: str | None) -> str | None:
    """A non-empty string (or the default, which may be None)."""
    value = opts.get(key, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PluginOptsError(f"{plugin}: {key} must be a non-empty string, not {value!r}")
    return value


def workspace_path(plugin: str, key: str, value: str) -> str:
    """A relative workspace path: no absolute path, no `..`."""
    parts = value.replace("\\", "/").split("/")
    if not value.strip() or value.startswith(("/", "~")) or ".." in parts:
        raise PluginOptsError(f"{plugin}: {key} must be a relative workspace path, not {value!r}")
    return value


def mapping(plugin: str, opts: Mapping[str, Any], key: str) -> dict[str, Any]:
    """An object (default {})."""
    value = opts.get(key) or {}
    if not isinstance(value, Mapping):
        raise PluginOptsError(f"{plugin}: {key} must be an object")
    return dict(value)
