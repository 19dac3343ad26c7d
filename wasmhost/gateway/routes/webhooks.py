"""Namespace admin routes: the namespace's webhook (where delivery events are POSTed, signed).

The signing secret is generated here and shown once, in the answer of the PUT that generated it (the
first PUT, or one with ``rotate_secret``); the store keeps it sealed and no answer carries it again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from ...push.webhooks import WebhookError, check_events, check_webhook_url, new_secret
from ..bodies import KIB, LimitedRoute, capped
from ..errors import ApiError, responses
from ..identity import AdminDep
from ..models import Status, WebhookIn, WebhookSaved, WebhookView
from ..state import Gateway, get_gateway

router = APIRouter(prefix="/v1/namespace", tags=["webhooks"], route_class=LimitedRoute)

GatewayDep = Annotated[Gateway, Depends(get_gateway)]

MAX_WEBHOOK_BYTES = 8 * KIB


async def _changed(gw: Gateway) -> None:
    """This process's delivery queue writes the namespace's events from the next state change on."""
    if gw.svc.webhooks is not None:
        await gw.svc.webhooks.refresh()


@router.get("/webhook", response_model=WebhookView, responses=responses(401, 404, 503),
            summary="The namespace's webhook: url, events, state and health (never the secret)")
async def get_webhook(gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    hook = await gw.svc.store.get_webhook(admin.namespace)  # type: ignore[attr-defined]
    if hook is None:
        raise ApiError(404, "this namespace has no webhook")
    return dict(hook.public())


@router.put(
    "/webhook", response_model=WebhookSaved, responses=responses(400, 401, 413, 503),
    openapi_extra=capped(MAX_WEBHOOK_BYTES),
    summary="Set the webhook (enables it again if it was disabled); the answer shows a new secret once",
)
async def put_webhook(body: WebhookIn, gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    svc = gw.svc
    try:
        events = check_events(body.events)
        url = await check_webhook_url(body.url, allow_private_endpoints=svc.settings.allow_private_endpoints)
    except WebhookError as exc:
        raise ApiError(400, str(exc)) from None
    store: Any = svc.store
    saved, secret = await store.put_webhook(admin.namespace, url, events, new_secret(), rotate=body.rotate_secret)
    await _changed(gw)
    return {**saved.public(), "secret": secret}


@router.delete("/webhook", response_model=Status, responses=responses(401, 404, 503),
               summary="Remove the webhook and the events not yet delivered to it")
async def delete_webhook(gw: GatewayDep, admin: AdminDep) -> Status:
    if not await gw.svc.store.delete_webhook(admin.namespace):  # type: ignore[attr-defined]
        raise ApiError(404, "this namespace has no webhook")
    await _changed(gw)
    return Status(status="deleted")
