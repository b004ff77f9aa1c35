"""HTTP bodies of the gateway (PROTOCOL §8): camelCase on the wire, cmdc_gateway compatible.

Requests refuse unknown fields, so a misspelt `maxTurn` is a 422 rather than a silently
ignored option; responses ignore them, like every reader of the contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from schemas._base import WireModel
from schemas._ids import Token
from schemas._options import PromptMode, Webhook

GatewayState = Literal["idle", "working", "waiting_approval", "waiting_input", "hibernated"]

MAX_TEXT_CHARS = 128_000
"""Prompt, steering and system prompt text: even at 4 UTF-8 bytes a character it fits the
512 KiB command limit with room for the envelope."""
MAX_REASON_CHARS = 1_000
MAX_DESCRIPTION_CHARS = 10_000
MAX_URL_CHARS = 2_048

ModelName = Annotated[str, StringConstraints(min_length=3, max_length=256)]
"""As the internal `create` and `switch_model`."""
Label = Annotated[str, StringConstraints(max_length=200)]
"""As the internal `checkpoint`."""
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)]
HttpUrl = Annotated[str, StringConstraints(max_length=MAX_URL_CHARS, pattern=r"^https?://\S+$")]
"""Checked further (allowlist, address ranges) by the gateway before it is used."""


class GatewayModel(WireModel):
    """An HTTP body: snake_case in Python, camelCase on the wire (cmdc_gateway)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        frozen=True,
    )


class _Request(GatewayModel):
    model_config = GatewayModel.model_config | {"extra": "forbid"}


class ErrorBody(GatewayModel):
    error: str
    message: str


# --- requests ---------------------------------------------------------------------------


class WebhookSpec(Webhook, _Request):
    """`webhook: {url, events}`: the internal `Webhook` (same checks and default events)."""

    model_config = _Request.model_config


class PluginInput(_Request):
    name: str = Field(min_length=1, max_length=200)
    opts: dict[str, Any] = Field(default_factory=dict)


class SubAgentInput(_Request):
    """A sub-agent of `subagents`; the internal `SubAgentSpec` in camelCase."""

    name: Token
    description: str = ""
    system_prompt: str = Field(default="", max_length=MAX_TEXT_CHARS)
    model: ModelName | None = None
    tools: list[str] = Field(default_factory=list)
    prompt_mode: PromptMode = "task"
    user_data: dict[str, Any] | None = None
    provider_opts: dict[str, Any] | None = None
    max_turns: int | None = Field(default=None, gt=0)
    plugins: list[str | PluginInput] | None = None
    """None: the parent's plugins with their options in force (PROTOCOL §6.11)."""
    skills_dirs: list[str] | None = None


class ToolCallInput(_Request):
    """A tool call of an assistant message in a prior history."""

    call_id: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)


class HistoryMessageInput(_Request):
    """A message of `messages`; the internal `HistoryMessage` in camelCase."""

    role: Literal["system", "user", "assistant", "tool_result"]
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCallInput] | None = None
    call_id: str | None = None
    name: str | None = None
    is_error: bool | None = None


class CompactorInput(_Request):
    trigger_tokens: int = Field(gt=0)
    keep_messages: int = Field(ge=0)


class CreateSessionRequest(_Request):
    """`POST /v1/sessions`: the session options of §5 in camelCase, plus `sessionId`."""

    model: ModelName
    session_id: Token | None = None
    system_prompt: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    prompt_mode: PromptMode | None = None
    working_dir: str | None = Field(default=None, max_length=4_096)
    tools: list[str] | None = None
    plugins: list[str | PluginInput] | None = None
    blueprint: str | None = Field(default=None, max_length=200)
    max_turns: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    skills_dirs: list[str] | None = None
    provider_opts: dict[str, Any] | None = None
    group_id: Token | None = None
    user_data: dict[str, Any] | None = None
    subagents: list[SubAgentInput] | None = None
    messages: list[HistoryMessageInput] | None = None
    webhook: WebhookSpec | None = None
    max_steering_queue: int | None = Field(default=None, ge=0)
    interrupt_immune_tools: list[str] | None = None
    tool_max_retries: int | None = Field(default=None, ge=0)
    tool_retry_delay_ms: int | None = Field(default=None, ge=0)
    compactor: CompactorInput | None = None
    hibernate_after_ms: int | None = Field(default=None, gt=0)
    event_buffer_size: int | None = Field(default=None, ge=0, le=1_000_000)
    memory: list[str] | None = None
    sandbox: Any = None
    response_format: Any = None
    """`memory`, `sandbox` and `responseFormat` are CMDC options the fleet refuses (422 with
    the reason), the same as on NATS."""

    def to_options(self) -> dict[str, Any]:
        """The internal `create` options (snake_case): the fields the client set, but `null`
        counts as unset and `sessionId` travels on the subject instead."""
        dumped = self.model_dump(by_alias=False, exclude={"session_id"})
        return {
            name: value
            for name, value in dumped.items()
            if name in self.model_fields_set and value is not None
        }


class PromptRequest(_Request):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class ApproveRequest(_Request):
    approval_id: Token
    kind: Literal["once", "always"] | None = None
    """None: the internal default, `once`."""


class RejectRequest(_Request):
    approval_id: Token
    reason: Reason | None = None
    auto_resume: bool = True
    """True here (the internal command defaults to False), so an HTTP client's turn ends."""


class RespondRequest(_Request):
    ref: Token
    response: Any


class SteerRequest(_Request):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class AbortRequest(_Request):
    reason: Reason | None = None
    kill_tools: bool | None = None
    """True: kill every running tool; False: none; None: all but the interrupt-immune ones."""
    clear_queue: bool | None = None


class ModelRequest(_Request):
    model: ModelName
    provider_opts: dict[str, Any] | None = None


class ToolRequest(_Request):
    """`POST /v1/sessions/:id/tools`: a callback tool the fleet calls over HTTP."""

    name: Token
    description: str = Field(max_length=MAX_DESCRIPTION_CHARS)
    parameters: dict[str, Any]
    """The JSON Schema of the tool's arguments."""
    callback_url: HttpUrl
    timeout_ms: int | None = Field(default=None, gt=0, le=3_600_000)


class CheckpointRequest(_Request):
    label: Label | None = None


# --- responses --------------------------------------------------------------------------


class HealthSessions(GatewayModel):
    active: int


class HealthMeter(GatewayModel):
    tracked_keys: int = Field(alias="tracked_keys")  # PROTOCOL §8 spells this one snake_case


class HealthView(GatewayModel):
    status: Literal["ok", "degraded"]
    version: str
    timestamp: str
    """ISO 8601."""
    sessions: HealthSessions
    meter: HealthMeter


class SessionCreated(GatewayModel):
    session_id: str
    model: str
    state: GatewayState


class SessionSummary(GatewayModel):
    session_id: str
    state: GatewayState
    model: str
    created_at: str
    """ISO 8601, like every timestamp of the HTTP API."""
    group_id: str | None = None
    parent_id: str | None = None
    """A sub-agent's parent session (listed with `?parentId=`, not among top-level ones)."""


class SessionList(GatewayModel):
    sessions: list[SessionSummary]


class PendingApprovalView(GatewayModel):
    approval_id: str
    tool_name: str
    args: dict[str, Any]


class SessionDetail(GatewayModel):
    session_id: str
    state: GatewayState
    turns: int
    tool_calls: int
    total_tokens: int
    uptime_ms: int
    model: str
    group_id: str | None = None
    parent_id: str | None = None
    """Set on a sub-agent: the session whose `task` call started it."""
    pending_approvals: list[PendingApprovalView] = Field(default_factory=list)


class SessionStopped(GatewayModel):
    session_id: str
    stopped: bool = True


class PromptAccepted(GatewayModel):
    request_id: str
    session_id: str
    queued: bool


class Accepted(GatewayModel):
    request_id: str


class Ok(GatewayModel):
    ok: bool = True


class TokenUsageView(GatewayModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class SessionStats(GatewayModel):
    session_id: str
    turns: int
    total_tokens: int
    cost_usd: float
    prompt_count: int
    token_usage: TokenUsageView


class ToolCallView(GatewayModel):
    """A tool call of an assistant message, as `messages` on create takes it back."""

    call_id: str
    name: str
    arguments: Any
    """The arguments object (a string when the model sent arguments that were not JSON)."""


class MessageView(GatewayModel):
    """A message of the history, with everything `messages` at create takes back: the
    output of `GET /messages` can be given as the `messages` of a new session."""

    role: str
    content: str | None = None
    """None for an assistant message that only calls tools."""
    tool_calls: list[ToolCallView] | None = None
    thinking: str | None = None
    call_id: str | None = None
    """A tool result: the call it answers."""
    name: str | None = None
    """A tool result: the tool's name."""
    is_error: bool | None = None
    """A tool result: whether the tool failed."""


class MessageList(GatewayModel):
    messages: list[MessageView]


class ToolRegistered(GatewayModel):
    name: str


class CheckpointView(GatewayModel):
    checkpoint_id: str
    label: str | None
    created_at: str
    """ISO 8601."""
    bytes: int


class CheckpointList(GatewayModel):
    checkpoints: list[CheckpointView]


class UsageView(GatewayModel):
    """What the meter counted for one API key."""

    requests: int
    prompts: int
    tokens: int
    cost_usd: float


GATEWAY_MODELS: tuple[type[GatewayModel], ...] = (
    ErrorBody,
    CreateSessionRequest,
    PromptRequest,
    ApproveRequest,
    RejectRequest,
    RespondRequest,
    SteerRequest,
    AbortRequest,
    ModelRequest,
    ToolRequest,
    CheckpointRequest,
    HealthView,
    SessionCreated,
    SessionList,
    SessionDetail,
    SessionStopped,
    PromptAccepted,
    Accepted,
    Ok,
    SessionStats,
    MessageList,
    ToolRegistered,
    CheckpointList,
    UsageView,
)
"""Every top-level HTTP body, in the order of PROTOCOL §8; exported as JSON Schema."""
