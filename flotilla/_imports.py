"""One loader for every `package.module:attr` a setting or an option names (custom tools,
plugins, blueprints, the registry's resolver hook): the same checks and the same words in
every error, and each path resolved once per process."""

from __future__ import annotations

import functools
import importlib

from flotilla.errors import ConfigurationError


@functools.cache
def load_object(path: str, *, what: str) -> object:
    """The object at `path` (`package.module:attr`, `attr` may be dotted); a
    ConfigurationError naming `what` and `path` when it cannot be had. Cached: a module's
    import and its attribute lookup happen once, not at every session load."""
    module_name, _, attr = path.strip().partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or not attr:
        raise ConfigurationError(f"{what} {path!r} must look like 'package.module:attr'")
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # a module may fail with anything while it imports
        raise ConfigurationError(
            f"{what} {path!r}: cannot import: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(
                f"{what} {path!r}: cannot import: AttributeError: {module_name} has no {attr!r}"
            )
        target = getattr(target, part)
    return target
