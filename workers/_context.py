"""What every session actor of a worker shares: store, publishers, providers, tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flotilla.audit import AuditPublisher
from flotilla.runtime import FleetCipher, SecretError, open_secrets
from flotilla.settings import Settings
from workers._events import EventPublisher
from workers._llm import LLM, LLMError
from workers._mock import MockLLM
from workers._outbox import CommandPublisher
from workers._sessions import Blueprints
from workers._store import SessionStore
from workers._stored import StoredCommands
from workers._toolbox import Toolbox
from workers.errors import CommandRejected

if TYPE_CHECKING:
    from workers._litellm import LiteLLM

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
    stored: StoredCommands
    dead_letter: DeadLetter
    tools: Toolbox
    blueprints: Blueprints
    mock: MockLLM
    audit: AuditPublisher
    cipher: FleetCipher | None = None
    """The fleet key, which seals the secrets of session options (None: kept as sent)."""
    registry: LLM | None = None
    """Serves `registry:` models (workers._registry_llm); set once the worker's copy runs."""
    _litellm: LiteLLM | None = field(default=None, repr=False)

    @property
    def worker_id(self) -> str:
        return self.events.worker_id

    def request_opts(self, opts: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        """Options as a request needs them: sealed secrets opened (a non-retryable LLMError
        when this worker cannot open them)."""
        try:
            opened: dict[str, Any] = open_secrets(opts, self.cipher, tenant)
        except SecretError as exc:
            raise LLMError(exc.code, str(exc), retryable=False) from None
        return opened

    def llm_for(self, model: str) -> LLM:
        """The provider adapter for `model`: the registry, the mock, or litellm."""
        if model.startswith("registry:"):
            if self.registry is None:
                raise LLMError(
                    "registry_unavailable",
                    "registry: models need the provider registry, which is not running here",
                    retryable=False,
                )
            return self.registry
        return self.provider_llm(model)

    def provider_llm(self, model: str) -> LLM:
        """The adapter of a `provider:model_id` model: the mock, or litellm (on first use)."""
        if model.partition(":")[0] == "mock":
            return self.mock
        return self._litellm_adapter()

    def _litellm_adapter(self) -> LiteLLM:
        if self._litellm is None:
            from workers._litellm import LiteLLM

            self._litellm = LiteLLM()
        return self._litellm

    async def check_model(self, model: str) -> None:
        """Refuse a model whose provider nothing here serves (`unsupported_provider`), so a
        create or switch_model fails at once rather than at its first LLM request. The
        first check of a litellm model imports litellm (in a thread, seconds)."""
        provider = model.partition(":")[0]
        if provider in ("mock", "registry"):  # mock names and profiles are checked per request
            return
        try:
            known = await self._litellm_adapter().knows(provider)
        except LLMError as exc:  # litellm is not installed
            raise CommandRejected(exc.code, str(exc)) from None
        if not known:
            raise CommandRejected(
                "unsupported_provider",
                f"model {model!r}: {provider!r} is not a provider litellm knows",
            )
