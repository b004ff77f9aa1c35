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


class ToolCallRecord(BaseModel):
    """One call of the current tool batch; its result is recorded once and never redone."""

    model_config = ConfigDict(extra="ignore")

    call_id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    status: Literal["pending", "running", "awaiting", "done"] = "pending"
    result: str | None = None
    is_error: bool = False
    approved: bool = False
    started_ms: int | None = None
    ended_ms: int | None = None


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
    batch: list[ToolCallRecord] = Field(default_factory=list)
    """The calls of the last assistant message, until all their results are in the history."""
    suspended: bool = False
    """Waiting for an approval, an answer or a sub-agent: no task runs the turn meanwhile."""
    follow_ups: list[str] = Field(default_factory=list)
    """User messages to add before the next LLM request (plugin interventions, a prompt that
    resumes a turn after `approve(auto_resume=false)`)."""
    recent_calls: list[str] = Field(default_factory=list)


class SteeringItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ref: str
    text: str
    request_id: str | None = None
    queued_ms: int = 0


class PendingApproval(BaseModel):
    model_config = ConfigDict(extra="ignore")

    approval_id: str
    call_id: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    family: str = "*"
    families: list[str] = Field(default_factory=list)
    """Every program a shell command line runs: `always` allows each of them."""
    hint: str | None = None
    requested_at: int = 0
    expires_ms: int | None = None
    decision: Literal["approved", "rejected"] | None = None
    options: list[str] | None = None
    """The answers offered (`approve_once`, `approve_always`, `reject_once`); None: all."""


class PendingQuestion(BaseModel):
    """An `ask_user` call waiting for `respond`, or a `task` call waiting for its sub-agent."""

    model_config = ConfigDict(extra="ignore")

    ref: str
    call_id: str
    kind: Literal["ask_user", "subagent"] = "ask_user"
    question: str = ""
    options: list[str] | None = None
    child_sid: str | None = None
    token: str | None = None
    """A sub-agent's secret: its report is signed with it, so only the fleet can end the
    wait (never shown to clients)."""


class ParentLink(BaseModel):
    """Set on a sub-agent: where to report the end of its task."""

    model_config = ConfigDict(extra="ignore")

    sid: str
    ref: str
    token: str = ""
    """The parent's secret for this sub-agent (signs its report)."""
    spent_usd: float = 0.0
    """What the parent's budget had spent when it started this sub-agent: it counts against
    this session's budgets too (cost_guard)."""
    reported: bool = False


class OutboxCommand(BaseModel):
    """A command to another session, saved with the step that decided it and published after
    the save (again by the next owner if this worker dies first; the stream dedupes by id)."""

    model_config = ConfigDict(extra="ignore")

    sid: str
    op: str
    body: dict[str, Any]
    msg_id: str


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
    context_tokens: int = 0
    """Prompt tokens of the last LLM request: what the compactor compares with its trigger."""
    prompt_count: int = 0
    current: TurnProgress | None = None
    prompt_queue: list[QueuedPrompt] = Field(default_factory=list)
    script_cursor: int = 0
    model: str
    history_len: int = 0
    applied_seq: int = 0
    plugin_states: dict[str, Any] = Field(default_factory=dict)
    plugin_opts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Options set by `update_plugin_opts`, over those given at `create`."""
    deferred_plugin_opts: list[dict[str, Any]] = Field(default_factory=list)
    provider_opts: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    callback_tools: list[dict[str, Any]] = Field(default_factory=list)
    steering_queue: list[SteeringItem] = Field(default_factory=list)
    pending_approvals: list[PendingApproval] = Field(default_factory=list)
    pending_questions: list[PendingQuestion] = Field(default_factory=list)
    allowlist: list[tuple[str, str]] = Field(default_factory=list)
    todos: list[dict[str, Any]] = Field(default_factory=list)
    system_context: dict[str, str] = Field(default_factory=dict)
    skills: list[dict[str, Any]] = Field(default_factory=list)
    """The skills found under `options.skills_dirs` at `create`: {name, description,
    allowed_tools, path} (the Skills section of a `full` system prompt)."""
    """Dynamic sections of the system prompt set by plugins (`update_system_context`)."""
    parent: ParentLink | None = None
    depth: int = 0
    subagent_usage: Usage = Field(default_factory=Usage)
    """What the session's finished sub-agents spent (their own sub-agents included)."""
    outbox: list[OutboxCommand] = Field(default_factory=list)
    unannounced: list[PendingEvent] = Field(default_factory=list)
    """Events saved with the step that caused them and not yet known to be published; a
    worker that loads the session publishes them again (the event stream dedupes by id)."""

    @property
    def group(self) -> str | None:
        return self.options.group_id

    @property
    def spent_usd(self) -> float:
        """What counts against the session's budgets: its own cost, its finished
        sub-agents', and for a sub-agent what its parent had spent when it started it."""
        inherited = self.parent.spent_usd if self.parent is not None else 0.0
        return self.usage.cost_usd + self.subagent_usage.cost_usd + inherited
