"""What every session actor of a worker shares: store, publisher, providers, settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flotilla.settings import Settings
from workers._events import EventPublisher
from workers._llm import LLM, LLMError
from workers._mock import MockLLM
from workers._store import SessionStore

DeadLetter = Callable[["DeadLetterRequest"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetterRequest:
    tenant: str
    sid: str
    seq: int
    code: str
    message: str
    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class WorkerContext:
    settings: Settings
    store: SessionStore
    events: EventPublisher
    dead_letter: DeadLetter
    mock: MockLLM

    @property
    def worker_id(self) -> str:
        return self.events.worker_id

    def llm_for(self, model: str) -> LLM:
        """The provider adapter for `model` (`mock:` now; litellm comes with the engine)."""
        provider = model.partition(":")[0]
        if provider == "mock":
            return self.mock
        raise LLMError(
            "unsupported_provider",
            f"provider {provider!r} is not available on this worker yet",
            retryable=False,
        )
