"""A namespace admin's view of its users' devices: look a user up, delete a device (tokens never shown).

The app-user routes (`routes/devices.py`) need the user's own JWT; these need the namespace's API key, so a
tenant can answer "why did this user's phone get nothing?" without acting as the user.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from ..errors import responses
from ..identity import AdminDep
from ..models import DeviceList, DeviceView, Status
from ..state import Gateway, get_gateway

router = APIRouter(prefix="/v1/namespace/users", tags=["namespace"])

GatewayDep = Annotated[Gateway, Depends(get_gateway)]
UserPath = Annotated[str, Path(min_length=1, max_length=512, description="The user id (the JWT's sub)")]


@router.get("/{user_id}/devices", response_model=DeviceList, responses=responses(400, 401, 503),
            summary="A user's devices (never their tokens); empty for an unknown user")
async def user_devices(user_id: UserPath, gw: GatewayDep, admin: AdminDep) -> DeviceList:
    devices = await gw.svc.store.list_user_devices(admin.namespace, user_id)
    return DeviceList(devices=[DeviceView(**d.public()) for d in devices])


@router.delete(
    "/{user_id}/devices/{device_id}", response_model=Status, responses=responses(400, 401, 404, 503),
    summary="Delete one of a user's devices (by the listing's `id`)",
)
async def delete_user_device(
    user_id: UserPath,
    device_id: Annotated[str, Path(max_length=64, description="The device's `id` from the listing")],
    gw: GatewayDep,
    admin: AdminDep,
) -> Status:
    await gw.svc.store.delete_device(admin.namespace, device_id, user_id)
    return Status(status="deleted")
