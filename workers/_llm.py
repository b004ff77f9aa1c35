"""The LLM port of the turn engine: a streaming call that yields chunks, then a response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas import Usage


@dataclass(frozen=True, slots=True)
class Chunk:
    kind: Literal["text", "thinking"]
    delta: str


@dataclass(slots=True)
class LLMResponse:
    text: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """`[{"call_id", "name", "arguments": {...}}]`; call_id may be empty (the engine fills it)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    script_step: bool = False
    """The call consumed a step of a `mock:script` (also through a registry profile): the
    session's script cursor advances, whether the call then succeeded or not."""


@dataclass(frozen=True, slots=True)
class LLMRequest:
    model: str
    messages: list[dict[str, Any]]
    system_prompt: str
    provider_opts: dict[str, Any]
    max_tokens: int | None
    script_cursor: int = 0
    prompt_chars: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)
    """OpenAI-style function declarations (`ToolSpec.for_llm()`)."""
    tenant: str = ""
    """The session's tenant: registry profiles of another tenant are not visible to it, and
    budgets are counted per tenant."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of this request only, set by plugins (`prompt_cache`...)."""


class LLMError(Exception):
    """A failed LLM call; `retryable` decides between `retry` and ending the turn."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after
        self.details = details or {}
        """Fields the `error` event carries besides code and message (`profile`)."""


class LLM(Protocol):
    """One provider; `stream` yields chunks and finally returns through `response`."""

    def stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        """Yield deltas while filling `response`; raise LLMError on failure."""
        ...


def add_usage(usage: Usage, response: LLMResponse) -> Usage:
    """`usage` plus one LLM answer's."""
    prompt = usage.prompt_tokens + response.prompt_tokens
    completion = usage.completion_tokens + response.completion_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=usage.cached_tokens + response.cached_tokens,
        cost_usd=usage.cost_usd + response.cost_usd,
    )
