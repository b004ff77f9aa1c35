"""`/v1/providers`: the provider registry (PROTOCOL §7) for admin keys.

Writes go to the router over NATS request/reply; reads come from this gateway's own copy of
the registry (an in-process read). Secret opts are shown as `***`, never in clear.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from flotilla import FlotillaError
from gateway._dependencies import Admin
from gateway._errors import ApiError, describe, documented
from gateway._resources import gateway_of
from schemas import Budget, GatewayModel, ProviderProfile

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/providers", tags=["providers"], responses=documented(401, 403, 404, 422, 429, 503)
)


class BudgetView(GatewayModel):
    tokens_per_day: int | None = None
    usd_per_day: float | None = None


class ProviderView(GatewayModel):
    name: str
    provider: str
    opts: dict[str, Any]
    tenant: str | None = None
    budget: BudgetView | None = None

    @classmethod
    def of(cls, profile: ProviderProfile) -> ProviderView:
        shown = profile.redacted()
        budget = shown.budget
        return cls(
            name=shown.name,
            provider=shown.provider,
            opts=shown.opts,
            tenant=shown.tenant,
            budget=BudgetView(**budget.model_dump()) if budget is not None else None,
        )


class ProviderList(GatewayModel):
    providers: list[ProviderView]


class ProviderPut(GatewayModel):
    provider: str
    opts: dict[str, Any] = {}
    tenant: str | None = None
    budget: BudgetView | None = None


class RegistryRevision(GatewayModel):
    ok: bool = True
    revision: int


@router.get("", response_model=ProviderList)
async def list_providers(request: Request, admin: Admin) -> Any:
    profiles = gateway_of(request).registry.profiles.values()
    return ProviderList(providers=[ProviderView.of(p) for p in sorted(profiles, key=_name)])


@router.get("/{name}", response_model=ProviderView)
async def get_provider(request: Request, admin: Admin, name: str) -> Any:
    profile = gateway_of(request).registry.lookup(name)
    if profile is None:
        raise ApiError(404, f"no provider profile {name!r}")
    return ProviderView.of(profile)


@router.put("/{name}", response_model=RegistryRevision, responses=documented(400, 413))
async def put_provider(request: Request, admin: Admin, name: str, body: ProviderPut) -> Any:
    try:
        profile = ProviderProfile(
            name=name,
            provider=body.provider,
            opts=body.opts,
            tenant=body.tenant,
            budget=Budget(**body.budget.model_dump()) if body.budget is not None else None,
        )
    except ValidationError as exc:
        raise ApiError(422, describe(list(exc.errors()))) from None
    try:
        gateway = gateway_of(request)
        revision = await gateway.fleet(admin.tenant).registry().register(profile)
    except FlotillaError as exc:
        raise _translated(exc) from None
    return RegistryRevision(revision=revision)


@router.delete("/{name}", response_model=RegistryRevision)
async def delete_provider(request: Request, admin: Admin, name: str) -> Any:
    try:
        gateway = gateway_of(request)
        revision = await gateway.fleet(admin.tenant).registry().unregister(name)
    except FlotillaError as exc:
        raise _translated(exc) from None
    return RegistryRevision(revision=revision)


def _translated(exc: FlotillaError) -> ApiError:
    status = {"not_found": 404, "invalid_request": 422}.get(exc.code, 503)
    return ApiError(status, str(exc), code=exc.code)


def _name(profile: ProviderProfile) -> str:
    return profile.name
