"""Fields a reader of the contract does not know, for the readers that must refuse them.

Models of the contract ignore unknown fields, so that a reader stays valid as the contract
grows. A command is different: an option the fleet does not know would be silently ignored,
so workers (and the SDK, before it publishes) refuse it instead, naming it — the same
answer the gateway gives (its bodies forbid unknown fields).
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["MAX_DEPTH", "deeper_than", "describe_errors", "unknown_fields", "unknown_message"]

MAX_DEPTH = 64
"""How deep the JSON of a command (or of a tool call's arguments) may nest. Deeper values
could be read but not written back: the fleet's JSON writers stop at 255 levels, and a
session's state wraps a command's values in a few levels of its own."""


def unknown_fields(model: type[BaseModel], data: object, *, path: str = "") -> list[str]:
    """Dotted paths of the keys of `data` that `model` does not define, looking into the
    fields whose type is a model (or a list or union of models); free-form fields
    (`dict[str, Any]`, `Any`) are not looked into."""
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for key, value in data.items():
        where = f"{path}{key}"
        field = model.model_fields.get(key)
        if field is None:
            found.append(where)
            continue
        for nested in _models(field.annotation):
            if isinstance(value, dict):
                found += unknown_fields(nested, value, path=f"{where}.")
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict):
                        found += unknown_fields(nested, item, path=f"{where}[{index}].")
    return found


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation holds directly, in a list, or in a union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin in (list, Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


UNKNOWN = "unknown field: not an option this fleet knows (a typo?)"


def unknown_message(paths: list[str]) -> str:
    """The refusal of a command with unknown fields, naming them (as `describe_errors`)."""
    return "; ".join(f"{path}: {UNKNOWN}" for path in paths[:5])


def describe_errors(errors: list[Any]) -> str:
    """What is wrong with a command or an HTTP body, from pydantic's errors:
    `field: message; ...` (the same words on NATS and HTTP)."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        message = UNKNOWN if error.get("type") == "extra_forbidden" else error.get("msg")
        parts.append(f"{where or 'body'}: {message or 'invalid'}")
    more = len(errors) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def deeper_than(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` (decoded JSON) nests more than `limit` arrays and objects deep."""
    level: list[tuple[object, int]] = [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict):
            children: list[object] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        level.extend((child, depth + 1) for child in children)
    return False
