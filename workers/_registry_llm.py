"""`registry:<profile>:<model_id>` models: resolved at each LLM request, then served by the
provider the profile names (`mock`, or any litellm provider) like a `provider:model_id` model.

The profile's opts win over the session's, and a session cannot add connection or secret
opts to a registry model: its `base_url` would otherwise send the profile's key elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from flotilla.registry import ProviderRegistryCopy, ResolverCache
from schemas import DEFAULT_TENANT, ProviderProfile, is_secret_opt
from workers import _metrics
from workers._budgets import BudgetMeter
from workers._llm import LLM, Chunk, LLMError, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

_CONNECTION_OPTS = frozenset(
    {"base_url", "api_base", "api_version", "organization", "extra_headers"}
)


class RegistryLLM:
    """The LLM port for every registry model of a worker."""

    def __init__(
        self,
        *,
        registry: ProviderRegistryCopy,
        resolver: ResolverCache,
        budgets: BudgetMeter,
        providers: Callable[[str], LLM],
    ) -> None:
        self._registry = registry
        self._resolver = resolver
        self._budgets = budgets
        self._providers = providers

    def stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        return self._stream(request, response)

    async def _stream(self, request: LLMRequest, response: LLMResponse) -> AsyncIterator[Chunk]:
        name, _, model_id = request.model.partition(":")[2].partition(":")
        if not name or not model_id:
            raise LLMError(
                "invalid_model",
                f"model {request.model!r} is not registry:<profile>:<model_id>",
                retryable=False,
            )
        profile = self._profile(name, request.tenant)
        resolved = await self._resolve(profile)
        tenant = request.tenant or DEFAULT_TENANT
        if profile.budget is not None:
            spent = await self._budgets.spent(profile.budget, tenant=tenant, profile=name)
            if spent is not None:
                raise LLMError(
                    "budget_exceeded",
                    f"tenant {tenant!r} has spent its daily budget of {spent} "
                    f"on provider profile {name!r}",
                    retryable=False,
                    details={"profile": name},
                )
        session_opts = {
            k: v
            for k, v in request.provider_opts.items()
            if not (is_secret_opt(k) or k in _CONNECTION_OPTS)
        }
        inner = dataclasses.replace(
            request,
            model=f"{profile.provider}:{model_id}",
            provider_opts={**session_opts, **resolved},
        )
        async for chunk in self._providers(inner.model).stream(inner, response):
            yield chunk
        if profile.budget is not None:
            await self._budgets.add(
                tenant=tenant,
                profile=name,
                tokens=response.prompt_tokens + response.completion_tokens,
                usd=response.cost_usd,
            )

    def _profile(self, name: str, tenant: str) -> ProviderProfile:
        profile = self._registry.lookup(name)
        # Another tenant's profile is reported missing: its existence is not theirs to learn.
        if (
            profile is None
            or (profile.tenant is not None and profile.tenant != tenant)
            or profile.provider == "registry"  # refused by the router; never a loop here
        ):
            _metrics.REGISTRY_LOOKUPS.labels("missing").inc()
            raise LLMError(
                "registry_profile_missing",
                f"no provider profile {name!r} in the registry",
                retryable=False,
                details={"profile": name},
            )
        return profile

    async def _resolve(self, profile: ProviderProfile) -> dict[str, Any]:
        try:
            opts = await self._resolver.resolve(profile)
        except Exception as exc:  # the node's hook may raise anything: one code for all
            _metrics.REGISTRY_LOOKUPS.labels("failed").inc()
            log.warning(
                "registry: the resolver failed for profile %r: %s",
                profile.name,
                type(exc).__name__,
            )
            raise LLMError(
                "registry_resolver_failed",
                f"the resolver of provider profile {profile.name!r} failed ({type(exc).__name__})",
                retryable=False,
                details={"profile": profile.name},
            ) from None
        _metrics.REGISTRY_LOOKUPS.labels("hit").inc()
        return opts
