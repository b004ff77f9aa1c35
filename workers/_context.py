"""What every session actor of a worker shares: store, publishers, providers, tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from flotilla.settings import Settings
from workers._events import EventPublisher
from workers._llm import LLM, LLMError
from workers._mock import MockLLM
from workers._outbox import CommandPublisher
from workers._sessions import Blueprints
from workers._store import SessionStore
from workers._toolbox import Toolbox

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


@dataclass(kw_only=True)
class WorkerContext:
    settings: Settings
    store: SessionStore
    events: EventPublisher
    commands: CommandPublisher
    dead_letter: DeadLetter
    tools: Toolbox
    blueprints: Blueprints
    mock: MockLLM
    _litellm: LLM | None = field(default=None, repr=False)

    @property
    def worker_id(self) -> str:
        return self.events.worker_id

    def llm_for(self, model: str) -> LLM:
        """The provider adapter for `model`: the mock, or litellm (imported on first use)."""
        provider = model.partition(":")[0]
        if provider == "mock":
            return self.mock
        if provider == "registry":
            raise LLMError(
                "registry_unavailable",
                "registry: models need the provider registry, which this fleet does not run yet",
                retryable=False,
            )
        if self._litellm is None:
            from workers._litellm import LiteLLM

            self._litellm = LiteLLM()
        return self._litellm
