"""JSON Schema export of every command, event and HTTP body, for clients in any language."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel
from pydantic.alias_generators import to_snake

from schemas._audit import AuditEvent
from schemas._commands import COMMAND_ADAPTER
from schemas._events import EVENT_ADAPTER, TYPED_EVENTS
from schemas._gateway import GATEWAY_MODELS
from schemas._options import SessionOptions
from schemas._registry import ProviderProfile
from schemas._state import SessionState


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema file per contract type into `directory`; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    documents: dict[str, object] = {
        "audit_event": AuditEvent.model_json_schema(),
        "command": COMMAND_ADAPTER.json_schema(),
        "event": EVENT_ADAPTER.json_schema(),
        "session_options": SessionOptions.model_json_schema(),
        "session_state": SessionState.model_json_schema(),
        "provider_profile": ProviderProfile.model_json_schema(),
    }
    for type_, model in TYPED_EVENTS.items():
        assert issubclass(model, BaseModel)
        documents[f"event.{type_}"] = model.model_json_schema()
    for body in GATEWAY_MODELS:
        documents[f"gateway.{to_snake(body.__name__)}"] = body.model_json_schema(by_alias=True)
    written = []
    for name, schema in sorted(documents.items()):
        path = directory / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
