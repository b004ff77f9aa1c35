"""Session options (PROTOCOL §5), the body of `create`."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from schemas._base import WireModel
from schemas._events import EVENT_CATALOG, NOT_PUBLISHED
from schemas._ids import Token, is_token

PromptMode = Literal["full", "task", "minimal", "none"]

DEFAULT_INTERRUPT_IMMUNE_TOOLS: tuple[str, ...] = (
    "write_file",
    "edit_file",
    "shell",
    "git_commit",
    "notebook_edit",
    "ask_user",
)
"""CMDC's default: tools whose half-done work would leave a mess are let finish."""

_TOOL_ALIASES = {
    "CMDC.Tool.ReadFile": "read_file",
    "CMDC.Tool.WriteFile": "write_file",
    "CMDC.Tool.EditFile": "edit_file",
    "CMDC.Tool.Shell": "shell",
    "CMDC.Tool.Grep": "grep",
    "CMDC.Tool.ListDir": "list_dir",
    "CMDC.Tool.Glob": "glob",
    "CMDC.Tool.Task": "task",
    "CMDC.Tool.WriteTodos": "write_todos",
    "CMDC.Tool.AskUser": "ask_user",
    "CMDC.Tool.CompactConversation": "compact_conversation",
}
_MODEL_PREFIXES = ("mock:", "registry:")


def canonical_tool_name(name: str) -> str:
    """Map a CMDC module name (`CMDC.Tool.ReadFile`) to its tool name (`read_file`)."""
    return _TOOL_ALIASES.get(name, name)


class PluginSpec(WireModel):
    name: str = Field(min_length=1, max_length=200)
    opts: dict[str, Any] = Field(default_factory=dict)


class SubAgentSpec(WireModel):
    """A sub-agent the `task` tool may start (CMDC's SubAgent). A field left out (None) is
    the parent's: in particular a sub-agent runs under its parent's plugins, with their
    options in force, unless `plugins` names its own (PROTOCOL §6.11)."""

    name: Token
    description: str = ""
    system_prompt: str = ""
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    prompt_mode: PromptMode = "task"
    user_data: dict[str, Any] | None = None
    provider_opts: dict[str, Any] | None = None
    max_turns: int | None = Field(default=None, gt=0)
    plugins: list[str | PluginSpec] | None = None
    skills_dirs: list[str] | None = None


class Compactor(WireModel):
    trigger_tokens: int = Field(gt=0)
    keep_messages: int = Field(ge=0)


DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("agent_end", "error", "approval_required")
MAX_WEBHOOK_URL_CHARS = 2048


class Webhook(WireModel):
    """Where the gateway POSTs the session's events of the listed types (PROTOCOL §8).

    The URL is checked further (allowlist, address ranges) at `create` and at each delivery.
    """

    url: str = Field(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS)
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS), min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("webhook url must not contain whitespace or control characters")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError as exc:
            raise ValueError(f"webhook url is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook url must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("webhook url must not carry credentials (deliveries are signed)")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = [type_ for type_ in value if type_ not in EVENT_CATALOG]
        if unknown:
            raise ValueError(f"unknown event types: {', '.join(map(repr, unknown))}")
        never = [type_ for type_ in value if type_ in NOT_PUBLISHED]
        if never:
            raise ValueError(f"the fleet never sends {never[0]!r}: {NOT_PUBLISHED[never[0]]}")
        return list(dict.fromkeys(value))


class CheckpointRef(WireModel):
    session_id: Token
    checkpoint_id: Token


class HistoryMessage(WireModel):
    """A message of the conversation history (CMDC.Message)."""

    role: Literal["system", "user", "assistant", "tool_result"]
    content: str = ""
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    call_id: str | None = None
    name: str | None = None
    is_error: bool | None = None


_UNSUPPORTED = {
    "memory": (
        "not supported yet: load memory files into the system prompt with the memory_loader "
        'plugin ({"name": "memory_loader", "opts": {"files": [...]}})'
    ),
    "sandbox": (
        "not supported yet: file tools are confined to the session workspace, and shell "
        "(off unless FLOTILLA_SHELL_ENABLED) runs in a scrubbed copy of it"
    ),
    "response_format": "not supported yet: structured output is not offered by this fleet",
}
"""CMDC options this fleet refuses rather than ignore, and why."""


class SessionOptions(WireModel):
    """Everything `create` accepts; the gateway takes the same fields in camelCase."""

    model: str = Field(min_length=3, max_length=256)
    system_prompt: str = ""
    prompt_mode: PromptMode = "full"
    tools: list[str] = Field(default_factory=list)
    plugins: list[str | PluginSpec] = Field(default_factory=list)
    subagents: list[SubAgentSpec] = Field(default_factory=list)
    group_id: Token | None = None
    user_data: dict[str, Any] = Field(default_factory=dict)
    messages: list[HistoryMessage] = Field(default_factory=list)
    max_turns: int = Field(default=100, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    provider_opts: dict[str, Any] = Field(default_factory=dict)
    max_steering_queue: int = Field(default=3, ge=0)
    interrupt_immune_tools: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INTERRUPT_IMMUNE_TOOLS)
    )
    tool_max_retries: int = Field(default=0, ge=0)
    tool_retry_delay_ms: int = Field(default=500, ge=0)
    compactor: Compactor | None = None
    hibernate_after_ms: int | None = Field(default=None, gt=0)
    blueprint: str | None = None
    working_dir: str | None = None
    """Only the workspace root (`.`) for now: file tools work in the session's workspace."""
    skills_dirs: list[str] = Field(default_factory=list)
    """Workspace directories whose SKILL.md files are the session's skills (found at
    `create`; listed in a `full` system prompt; skill_guard's default directories)."""
    webhook: Webhook | None = None
    event_buffer_size: int | None = Field(default=None, ge=0, le=1_000_000)
    """CMDC's per-session replay buffer. Always on here: every event is kept in the event
    stream for FLOTILLA_EVENT_MAX_AGE_S and replayed with `since`, whatever this says."""
    memory: list[str] | None = None
    sandbox: Any = None
    response_format: Any = None

    @field_validator("working_dir")
    @classmethod
    def _workspace_root(cls, value: str | None) -> str | None:
        if value not in (None, "", ".", "./"):
            raise ValueError(
                "only '.' is supported for now: file tools work in the session's own "
                "workspace, which follows the session from worker to worker"
            )
        return value

    @field_validator("memory", "sandbox", "response_format")
    @classmethod
    def _not_yet(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            raise ValueError(_UNSUPPORTED[str(info.field_name)])
        return value

    @field_validator("model")
    @classmethod
    def _model_has_provider(cls, value: str) -> str:
        provider, sep, model_id = value.partition(":")
        if not sep or not provider or not model_id:
            raise ValueError("model must be 'provider:model_id', 'registry:<p>:<m>' or 'mock:<n>'")
        if provider == "registry":
            profile, sep, model_id = model_id.partition(":")
            if not sep or not is_token(profile) or not model_id:
                raise ValueError("a registry model is 'registry:<profile>:<model_id>'")
        return value

    @field_validator("tools")
    @classmethod
    def _canonical_tools(cls, value: list[str]) -> list[str]:
        return [canonical_tool_name(name) for name in value]

    @property
    def provider(self) -> str:
        return self.model.partition(":")[0]

    def is_mock(self) -> bool:
        return self.model.startswith(_MODEL_PREFIXES[0])
