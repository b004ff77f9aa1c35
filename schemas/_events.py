"""Events of PROTOCOL §4: the envelope, the catalog of types by channel, and their data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, TypeAdapter, create_model

from schemas._base import WireModel

Channel = Literal["progress", "control", "monitor"]


class Usage(WireModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0


class _Empty(WireModel):
    pass


class Delta(WireModel):
    delta: str


class LastMessage(WireModel):
    role: str
    content: str


class ErrorInfo(WireModel):
    code: str
    message: str


class AgentEnd(WireModel):
    reason: Literal["finished", "max_turns", "rejected", "error"]
    last_message: LastMessage | None
    usage: Usage
    error: ErrorInfo | None = None


class ResponseComplete(WireModel):
    message: dict[str, Any]


class ToolCalls(WireModel):
    count: int


class ToolExecutionStart(WireModel):
    name: str
    call_id: str
    args: dict[str, Any]


class ToolExecutionEnd(WireModel):
    name: str
    call_id: str
    status: Literal["ok", "error"]
    result: str


class TodoChange(WireModel):
    todos: list[dict[str, Any]]


class SubagentStart(WireModel):
    child_sid: str
    description: str


class SubagentEnd(WireModel):
    child_sid: str
    result: str


class CompactEnd(WireModel):
    removed_count: int


class SessionResumed(WireModel):
    from_: Literal["snapshot", "checkpoint"] = Field(alias="from")
    worker: str


class PromptInfo(WireModel):
    text: str
    queued: bool = False


class PromptRejected(WireModel):
    text: str
    reason: str


PERMISSION_OPTIONS: tuple[str, ...] = ("approve_once", "approve_always", "reject_once")
"""The answers to an approval (CMDC's `permission_options`)."""


class ApprovalRequired(WireModel):
    approval_id: str
    tool: str
    args: dict[str, Any]
    hint: str | None = None
    requested_at: int
    permission_options: list[str] = Field(default_factory=lambda: list(PERMISSION_OPTIONS))
    """The answers offered: `approve` with kind once / always, `reject`."""


class ApprovalResolved(WireModel):
    approval_id: str
    tool: str
    status: Literal["approved", "rejected"]
    kind: str | None = None


class AgentResumed(WireModel):
    trigger: Literal["tool_approved", "tool_rejected", "tool_approval_timeout"]
    approval_id: str


class AskUser(WireModel):
    ref: str
    question: str
    options: list[str] | None = None


class UserResponded(WireModel):
    ref: str
    response: Any


class SteeringReceived(WireModel):
    ref: str
    status: Literal["queued", "rejected_full", "rejected_by_plugin"]


class SteeringApplied(WireModel):
    refs: list[str]
    count: int


class Reason(WireModel):
    reason: str


class ModelSwitched(WireModel):
    from_: str = Field(alias="from")
    to: str
    provider_opts_changed: bool = False


class ToolName(WireModel):
    name: str


class PluginOptsUpdated(WireModel):
    plugin: str
    success: bool
    error: str | None = None
    mode: str


class CheckpointSaved(WireModel):
    checkpoint_id: str
    label: str | None
    bytes: int


class TurnResumed(WireModel):
    turn: int
    step: int
    worker: str


class ErrorData(WireModel):
    code: str
    message: str
    command_id: str | None = None


class Retry(WireModel):
    attempt: int
    delay_ms: int
    reason: str


class LlmCall(WireModel):
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    duration_ms: float
    cost_usd: float


class ToolExecutionMetrics(WireModel):
    name: str
    call_id: str
    started_at_ms: int
    ended_at_ms: int | None = None
    duration_ms: int | None = None


class ToolIncident(WireModel):
    name: str
    call_id: str
    reason: str


class PluginEvent(WireModel):
    plugin: str
    kind: str
    payload: dict[str, Any]


class StreamGap(WireModel):
    requested: int
    first_available: int


class Freeform(WireModel):
    """Data of monitor events whose fields follow CMDC loosely (loop_detected...)."""

    model_config = WireModel.model_config | {"extra": "allow"}


@dataclass(frozen=True, slots=True)
class EventSpec:
    channel: Channel
    data: type[WireModel]


EVENT_CATALOG: dict[str, EventSpec] = {
    # progress: what a UI renders
    "agent_start": EventSpec("progress", _Empty),
    "message_start": EventSpec("progress", _Empty),
    "message_delta": EventSpec("progress", Delta),
    "thinking_start": EventSpec("progress", _Empty),
    "thinking_delta": EventSpec("progress", Delta),
    "response_complete": EventSpec("progress", ResponseComplete),
    "tool_calls": EventSpec("progress", ToolCalls),
    "tool_execution_start": EventSpec("progress", ToolExecutionStart),
    "tool_execution_end": EventSpec("progress", ToolExecutionEnd),
    "todo_change": EventSpec("progress", TodoChange),
    "subagent_start": EventSpec("progress", SubagentStart),
    "subagent_end": EventSpec("progress", SubagentEnd),
    "compact_start": EventSpec("progress", _Empty),
    "compact_end": EventSpec("progress", CompactEnd),
    "agent_end": EventSpec("progress", AgentEnd),
    # control: what needs a decision or changes the session
    "session_created": EventSpec("control", _Empty),
    "session_stopped": EventSpec("control", _Empty),
    "session_hibernated": EventSpec("control", _Empty),
    "session_resumed": EventSpec("control", SessionResumed),
    "prompt_received": EventSpec("control", PromptInfo),
    "prompt_queued": EventSpec("control", PromptInfo),
    "prompt_dropped": EventSpec("control", PromptInfo),
    "prompt_rejected": EventSpec("control", PromptRejected),
    "approval_required": EventSpec("control", ApprovalRequired),
    "approval_resolved": EventSpec("control", ApprovalResolved),
    "agent_resumed": EventSpec("control", AgentResumed),
    "ask_user": EventSpec("control", AskUser),
    "user_responded": EventSpec("control", UserResponded),
    "steering_received": EventSpec("control", SteeringReceived),
    "steering_applied": EventSpec("control", SteeringApplied),
    "agent_abort": EventSpec("control", Reason),
    "model_switched": EventSpec("control", ModelSwitched),
    "tool_attached": EventSpec("control", ToolName),
    "tool_detached": EventSpec("control", ToolName),
    "plugin_opts_updated": EventSpec("control", PluginOptsUpdated),
    "checkpoint_saved": EventSpec("control", CheckpointSaved),
    "turn_resumed": EventSpec("control", TurnResumed),
    # monitor: errors, metrics, audit
    "error": EventSpec("monitor", ErrorData),
    "retry": EventSpec("monitor", Retry),
    "llm_call": EventSpec("monitor", LlmCall),
    "tool_execution_metrics": EventSpec("monitor", ToolExecutionMetrics),
    "tool_blocked": EventSpec("monitor", ToolIncident),
    "tool_killed": EventSpec("monitor", ToolIncident),
    "tool_call_unknown": EventSpec("monitor", ToolIncident),
    "tool_skipped_for_steering": EventSpec("monitor", ToolIncident),
    "loop_detected": EventSpec("monitor", Freeform),
    "context_overflow": EventSpec("monitor", Freeform),
    "stream_stalled": EventSpec("monitor", Freeform),
    "cost_warning": EventSpec("monitor", Freeform),
    "plugin_event": EventSpec("monitor", PluginEvent),
    "stream_gap": EventSpec("monitor", StreamGap),
}


NOT_PUBLISHED: dict[str, str] = {
    "stream_gap": (
        "a notice the gateway and the SDK give a reader whose cursor is older than the "
        "retention window, not an event of the session"
    ),
    "stream_stalled": "not published yet (stream health monitoring comes later)",
}
"""Catalog types the workers never publish, and why: a webhook cannot subscribe to them."""


def channel_of(type_: str) -> Channel:
    """The channel an event type is published on."""
    return EVENT_CATALOG[type_].channel


class Event(WireModel):
    """The envelope every event is published in."""

    type: str
    sid: str
    tenant: str
    group: str | None = None
    ts: int
    turn: int = 0
    request_id: str | None = None
    worker: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] | None = None
    seq: int | None = Field(default=None, description="FLOTILLA_EVT sequence, set by readers")

    @property
    def channel(self) -> Channel:
        return channel_of(self.type)


def _typed_event(type_: str, spec: EventSpec) -> type[WireModel]:
    name = "".join(part.title() for part in type_.split("_")) + "Event"
    tag: Any = Literal[type_]  # a Literal built at run time: one per catalog entry
    return create_model(name, __base__=Event, type=(tag, ...), data=(spec.data, ...))


TYPED_EVENTS: dict[str, type[WireModel]] = {
    type_: _typed_event(type_, spec) for type_, spec in EVENT_CATALOG.items()
}


def _build_event_adapter() -> TypeAdapter[Any]:
    from typing import Annotated, Union

    union: Any = Union[tuple(TYPED_EVENTS.values())]  # noqa: UP007 - built from the catalog
    annotated: Any = Annotated[union, Field(discriminator="type")]
    return TypeAdapter(annotated)


EVENT_ADAPTER: TypeAdapter[Any] = _build_event_adapter()


def validate_event(raw: bytes | str) -> WireModel:
    """Parse and validate an event against its type's data model (strict check for clients)."""
    return EVENT_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]
