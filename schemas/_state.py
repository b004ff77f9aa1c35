"""Session state as persisted between steps: a small record rewritten at each step boundary.

The message history is not part of it: it is appended to a list of its own, so the cost of a
step does not grow with the length of the conversation (ARCHITECTURE, "Session state").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas._events import Usage
from schemas._options import SessionOptions

Status = Literal["idle", "running", "streaming", "executing_tools", "hibernated", "stopped"]


class QueuedPrompt(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    request_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class TurnProgress(BaseModel):
    """Where the running turn is: enough for another worker to continue it."""

    model_config = ConfigDict(extra="ignore")

    turn: int
    step: int = 0
    request_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    started_ms: int = 0
    history_start: int = 0
    usage: Usage = Field(default_factory=Usage)


class PendingEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    data: dict[str, Any]
    turn: int
    request_id: str | None = None
    meta: dict[str, Any] | None = None
    msg_id: str


class SessionState(BaseModel):
    """Everything about a session except its message history."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    schema_version: int = 1
    sid: str
    tenant: str
    options: SessionOptions
    status: Status = "idle"
    created_ms: int
    last_active_ms: int
    turns: int = 0
    tool_calls: int = 0
    usage: Usage = Field(default_factory=Usage)
    prompt_count: int = 0
    current: TurnProgress | None = None
    prompt_queue: list[QueuedPrompt] = Field(default_factory=list)
    script_cursor: int = 0
    model: str
    history_len: int = 0
    applied_seq: int = 0
    plugin_states: dict[str, Any] = Field(default_factory=dict)
    unannounced: list[PendingEvent] = Field(default_factory=list)
    """Events saved with the step that caused them and not yet known to be published; a
    worker that loads the session publishes them again (the event stream dedupes by id)."""

    @property
    def group(self) -> str | None:
        return self.options.group_id
