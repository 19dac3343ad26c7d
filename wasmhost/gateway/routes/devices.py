"""App-user device routes (the tenant's JWT): a user sees and deletes only their own devices."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from ...push.credentials import CredentialsError, require_configured, validate_device_token
from ..bodies import KIB, LimitedRoute, capped
from ..errors import ApiError, responses
from ..identity import UserDep
from ..models import DeviceIn, DeviceList, DeviceView, Status
from ..state import Gateway, get_gateway
from .namespace import spec_for

router = APIRouter(prefix="/v1/push/devices", tags=["devices"], route_class=LimitedRoute)

GatewayDep = Annotated[Gateway, Depends(get_gateway)]

MAX_DEVICE_BYTES = 4 * KIB


@router.post(
    "", response_model=DeviceView, responses=responses(400, 401, 409, 413, 503), openapi_extra=capped(MAX_DEVICE_BYTES),
    summary="Register (or update) one of the caller's devices; the token is never returned",
)
async def register_device(body: DeviceIn, gw: GatewayDep, user: UserDep) -> dict[str, Any]:
    spec = spec_for(gw, body.provider)
    store = gw.svc.store
    try:
        require_configured(user.namespace, body.provider, await gw.svc.manager.configured_providers(user.namespace))
    except CredentialsError as exc:
        raise ApiError(400, str(exc)) from None
    document = await store.get_credentials(user.namespace, body.provider)
    try:
        token = await validate_device_token(spec, body.token, document)
    except CredentialsError as exc:
        raise ApiError(400, f"invalid {body.provider} token: {exc}") from None
    device = await store.register_device(
        user.namespace, user.user_id, body.device_id, body.provider, token, body.platform, body.app_version
    )
    return device.public()


@router.get("", response_model=DeviceList, responses=responses(400, 401, 503), summary="The caller's devices")
async def list_devices(gw: GatewayDep, user: UserDep) -> DeviceList:
    devices = await gw.svc.store.list_user_devices(user.namespace, user.user_id)
    return DeviceList(devices=[DeviceView(**d.public()) for d in devices])


@router.delete(
    "/{device_id}", response_model=Status, responses=responses(400, 401, 404, 503),
    summary="Delete one of the caller's devices (anyone else's id is 404)",
)
async def delete_device(
    device_id: Annotated[str, Path(max_length=64, description="The device's `id` from the listing")],
    gw: GatewayDep,
    user: UserDep,
) -> Status:
    await gw.svc.store.delete_device(user.namespace, device_id, user.user_id)
    return Status(status="deleted")
