"""Namespace admin routes: the namespace's user-token settings and its provider credentials.

Every change invalidates the namespace's dispatcher before answering, so the next send uses it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from ...push.credentials import CredentialsError, ProviderSpec, validate_credentials
from ..bodies import KIB, LimitedRoute, capped
from ..errors import ApiError, responses
from ..identity import Admin, AdminDep
from ..models import (
    AuthSettingsIn,
    AuthSettingsSaved,
    AuthSettingsView,
    CredentialsList,
    CredentialsView,
    NamespaceInfo,
)
from ..state import Gateway, get_gateway
from ..usertokens import NO_AUDIENCE_WARNING, AuthSettingsError, normalize_settings, public_view

router = APIRouter(prefix="/v1/namespace", tags=["namespace"], route_class=LimitedRoute)

GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ProviderPath = Annotated[str, Path(min_length=1, max_length=32, description="Provider name, e.g. outbox, apns")]

#: Credentials documents are at most this big (a service-account JSON is ~2.5 KiB).
MAX_CREDENTIALS_BYTES = 32 * KIB
MAX_AUTH_SETTINGS_BYTES = 32 * KIB


@router.get("", response_model=NamespaceInfo, responses=responses(401, 503), summary="Who am I")
async def namespace_info(gw: GatewayDep, admin: AdminDep) -> NamespaceInfo:
    svc = gw.svc
    providers = sorted(await svc.store.all_credentials(admin.namespace))
    return NamespaceInfo(
        namespace=admin.namespace, key_id=admin.key_id, providers=providers,
        push_configured=await svc.manager.is_configured(admin.namespace),
    )


# -- end-user token settings ----------------------------------------------------------------------


@router.get("/auth", response_model=AuthSettingsView, responses=responses(401, 503),
            summary="How this namespace's user tokens are verified")
async def get_auth(gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    return public_view(admin.namespace, await gw.svc.store.get_auth_settings(admin.namespace))


@router.put(
    "/auth", response_model=AuthSettingsSaved, responses=responses(400, 401, 413, 503),
    openapi_extra=capped(MAX_AUTH_SETTINGS_BYTES), summary="Set how user tokens are verified",
)
async def put_auth(body: AuthSettingsIn, gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    try:
        settings = normalize_settings(body.model_dump())
    except AuthSettingsError as exc:
        raise ApiError(400, f"auth settings rejected: {exc}") from None
    await gw.svc.store.put_auth_settings(admin.namespace, settings)
    view = public_view(admin.namespace, settings)
    if not settings.get("audience"):
        view["warning"] = NO_AUDIENCE_WARNING
    return view


@router.delete("/auth", response_model=AuthSettingsView, responses=responses(401, 503),
               summary="Stop accepting user tokens")
async def delete_auth(gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    await gw.svc.store.delete_auth_settings(admin.namespace)
    return public_view(admin.namespace, None)


# -- provider credentials -------------------------------------------------------------------------


def spec_for(gw: Gateway, provider: str) -> ProviderSpec:
    spec = gw.svc.specs.get(provider)
    if spec is None:
        supported = ", ".join(sorted(gw.svc.specs))
        raise ApiError(400, f"unsupported provider {provider!r} (supported: {supported})")
    return spec


def _view(admin: Admin, provider: str, redacted: dict[str, Any] | None) -> CredentialsView:
    return CredentialsView(
        namespace=admin.namespace, provider=provider, configured=redacted is not None, redacted=redacted
    )


@router.get("/push-credentials", response_model=CredentialsList, responses=responses(401, 503),
            summary="Configured and supported providers")
async def list_credentials(gw: GatewayDep, admin: AdminDep) -> CredentialsList:
    svc = gw.svc
    return CredentialsList(
        namespace=admin.namespace,
        configured=sorted(await svc.store.all_credentials(admin.namespace)),
        supported=sorted(svc.specs),
        push_configured=await svc.manager.is_configured(admin.namespace),
    )


@router.get("/push-credentials/{provider}", response_model=CredentialsView, responses=responses(400, 401, 503),
            summary="One provider's credentials, redacted")
async def get_credentials(provider: ProviderPath, gw: GatewayDep, admin: AdminDep) -> CredentialsView:
    spec = spec_for(gw, provider)
    document = await gw.svc.store.get_credentials(admin.namespace, provider)
    return _view(admin, provider, None if document is None else spec.redact(document))


@router.put(
    "/push-credentials/{provider}", response_model=CredentialsView, responses=responses(400, 401, 413, 503),
    openapi_extra=capped(MAX_CREDENTIALS_BYTES), summary="Save a provider's credentials (validated)",
)
async def put_credentials(
    provider: ProviderPath,
    document: Annotated[dict[str, Any], Body(description="The provider's credentials document ({} for outbox)")],
    gw: GatewayDep,
    admin: AdminDep,
) -> CredentialsView:
    spec = spec_for(gw, provider)
    try:
        normalized = await validate_credentials(spec, document)
    except CredentialsError as exc:
        raise ApiError(400, f"credential validation failed: {exc}") from None
    svc = gw.svc
    await svc.store.put_credentials(admin.namespace, provider, normalized)
    svc.manager.invalidate(admin.namespace)
    return _view(admin, provider, spec.redact(normalized))


@router.delete("/push-credentials/{provider}", response_model=CredentialsView,
               responses=responses(400, 401, 503), summary="Remove a provider's credentials (idempotent)")
async def delete_credentials(provider: ProviderPath, gw: GatewayDep, admin: AdminDep) -> CredentialsView:
    spec_for(gw, provider)
    svc = gw.svc
    await svc.store.delete_credentials(admin.namespace, provider)
    svc.manager.invalidate(admin.namespace)
    return _view(admin, provider, None)
