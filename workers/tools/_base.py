"""The tool port of the turn engine: a tool's spec, its context, its result.

Every tool — built-in, custom Python, external over NATS or an HTTP callback — is a `Tool`:
a spec the LLM sees and an async `run`. Tools that need the engine (ask the user, run a
sub-agent, compact the conversation) return an `effect` instead of finishing by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from flotilla.settings import Settings
    from workers.tools._workspace import Workspace


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the LLM is told about a tool, plus how the engine treats it."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments (an object schema)."""
    idempotent: bool = False
    """Safe to run again after a lost worker left it unfinished (read-only tools)."""
    timeout_s: float | None = None
    """Per-call timeout; None means the fleet's `tool_timeout_s`."""

    def for_llm(self) -> dict[str, Any]:
        """The OpenAI-style function declaration."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True)
class AskUserEffect:
    question: str
    options: list[str] | None = None


@dataclass(frozen=True, slots=True)
class SubagentEffect:
    description: str
    subagent_type: str | None = None


@dataclass(frozen=True, slots=True)
class CompactEffect:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TodosEffect:
    todos: list[dict[str, Any]]


Effect = AskUserEffect | SubagentEffect | CompactEffect | TodosEffect


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one call: text for the LLM, an error flag, maybe an engine effect."""

    text: str
    is_error: bool = False
    effect: Effect | None = None

    @classmethod
    def error(cls, text: str) -> ToolResult:
        return cls(text, is_error=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """What a tool may use: never the session state itself."""

    session_id: str
    tenant: str
    call_id: str
    workspace: Workspace
    settings: Settings
    user_data: dict[str, Any] = field(default_factory=dict)
    turn: int = 0


class Tool(Protocol):
    """A tool; `run` returns a ToolResult and never raises for a domain failure."""

    @property
    def spec(self) -> ToolSpec: ...

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Execute one call; raise only for bugs (the engine reports them as error results)."""
        ...


def reply_result(content: bytes) -> ToolResult | None:
    """An external tool's reply, `{"result": ...}` or `{"error": ...}` (non-string values
    JSON-encoded), as a ToolResult; None when the reply is neither."""
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(reply, dict):
        return None
    if reply.get("error") is not None:
        return ToolResult.error(_text(reply["error"]))
    if "result" in reply:
        return ToolResult(_text(reply["result"]))
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
