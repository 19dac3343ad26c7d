"""Namespace admin push routes: the flat config, sending to a user, and reading the outbox."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse

from ...push.errors import QueueFull, SendConflict
from ...push.message import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_BYTES, MessageError, parse_message
from ...push.urlguard import UnsafeURL, check_url
from ...store.base import PushConfig
from ..bodies import KIB, LimitedRoute, capped
from ..errors import ApiError, responses
from ..identity import AdminDep
from ..models import (
    OutboxEntry,
    OutboxList,
    PushConfigIn,
    PushConfigView,
    SendAccepted,
    SendIn,
    SendList,
    SendReportView,
    SendStatusView,
    Status,
)
from ..state import Gateway, get_gateway

router = APIRouter(prefix="/v1/push", tags=["push"], route_class=LimitedRoute)

GatewayDep = Annotated[Gateway, Depends(get_gateway)]

MAX_CONFIG_BYTES = 16 * KIB
MAX_SEND_BYTES = 64 * KIB
#: Most outbox records one listing returns.
MAX_OUTBOX_LIMIT = 1000
#: Most sends one listing returns.
MAX_SENDS_LIMIT = 200


def _config_view(namespace: str, config: PushConfig | None) -> dict[str, Any]:
    return (config or PushConfig(namespace)).redacted()


@router.get("/config", response_model=PushConfigView, responses=responses(401, 503),
            summary="The flat push config, redacted")
async def get_config(gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    return _config_view(admin.namespace, await gw.svc.store.get_push_config(admin.namespace))


@router.put(
    "/config", response_model=PushConfigView, responses=responses(400, 401, 413, 503),
    openapi_extra=capped(MAX_CONFIG_BYTES),
    summary='Change the flat push config: omitted or null keeps a field, "" clears it',
)
async def put_config(body: PushConfigIn, gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    svc = gw.svc
    if body.ntfy_base_url:
        try:
            await check_url(body.ntfy_base_url, allow_private_endpoints=svc.settings.allow_private_endpoints)
        except UnsafeURL as exc:
            raise ApiError(400, f"ntfy_base_url rejected: {exc}") from None
    current = await svc.store.get_push_config(admin.namespace) or PushConfig(admin.namespace)
    changes = body.model_dump(exclude_none=True)
    updated = PushConfig(
        namespace=admin.namespace,
        ntfy_base_url=changes.get("ntfy_base_url", current.ntfy_base_url),
        ntfy_auth_token=changes.get("ntfy_auth_token", current.ntfy_auth_token),
        expo_access_token=changes.get("expo_access_token", current.expo_access_token),
    )
    # As for an ntfy credentials document: a token never travels unencrypted to a public server.
    plain_http = updated.ntfy_base_url.lower().startswith("http:")
    if plain_http and updated.ntfy_auth_token and not svc.settings.allow_private_endpoints:
        raise ApiError(400, "ntfy_base_url must be https when ntfy_auth_token is set (it would travel unencrypted)")
    saved = await svc.store.put_push_config(updated)
    svc.manager.invalidate(admin.namespace)
    return _config_view(admin.namespace, saved)


@router.delete("/config", response_model=Status, responses=responses(401, 503), summary="Clear the flat push config")
async def delete_config(gw: GatewayDep, admin: AdminDep) -> Status:
    svc = gw.svc
    await svc.store.delete_push_config(admin.namespace)
    svc.manager.invalidate(admin.namespace)
    return Status(status="cleared")


@router.post(
    "/send",
    response_model=SendReportView,
    responses={
        202: {"model": SendAccepted, "description": "With ?wait=0: accepted and queued; nothing delivered yet"},
        207: {"model": SendReportView, "description": "Some attempted devices failed; the report says which and why"},
        **responses(400, 401, 409, 413, 429, 503),
    },
    openapi_extra=capped(MAX_SEND_BYTES),
    summary="Send to every device of a user; the answer is the per-device report",
)
async def send(
    body: SendIn, gw: GatewayDep, admin: AdminDep,
    wait: Annotated[int, Query(ge=0, le=1, description="0: answer 202 once the send is stored")] = 1,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_MESSAGE_ID_BYTES)] = None,
) -> JSONResponse:
    fields = body.model_dump(exclude_none=True)
    user_id = fields.pop("user_id")
    try:
        message = parse_message(fields)  # first: it bounds the nesting that json.dumps walks
    except MessageError as exc:
        raise ApiError(400, str(exc)) from None
    if len(json.dumps(fields, ensure_ascii=False).encode()) > MAX_MESSAGE_BYTES:
        raise ApiError(413, f"the message is over {MAX_MESSAGE_BYTES} bytes")
    try:
        await gw.send_limiter.acquire_or_429(admin.namespace)
    except ApiError:
        gw.metrics.rate_limited.labels(cap="sends_per_minute").inc()
        raise
    try:
        report = await gw.svc.manager.send_to_user(admin.namespace, user_id, message,
                                                   idempotency_key=idempotency_key or "", wait=bool(wait))
    except SendConflict as exc:
        raise ApiError(409, str(exc)) from None
    except QueueFull as exc:
        gw.metrics.rate_limited.labels(cap="max_queued").inc()
        raise ApiError(429, str(exc), {"Retry-After": "60"}) from None
    except Exception:
        gw.metrics.sends.labels(outcome="error").inc()
        raise
    if not wait:
        gw.metrics.sends.labels(outcome="queued").inc()
        return JSONResponse({"send_id": report.send_id, "state": "pending" if report.results else "completed"},
                            status_code=202)
    gw.metrics.sends.labels(outcome="ok" if report.ok else "partial").inc()
    return JSONResponse(report.to_dict(), status_code=200 if report.ok else 207)


async def _queue(gw: Gateway) -> Any:
    """The store to read sends from, once this process's recorded states are committed."""
    queue = gw.svc.manager.queue
    if queue is None:
        raise ApiError(503, "durable delivery is not enabled")
    await queue.flush()
    return gw.svc.store


@router.get("/sends/{send_id}", response_model=SendStatusView, responses=responses(400, 401, 404, 503),
            summary="One accepted send: each device's state, attempts, last error and times")
async def get_send(send_id: Annotated[str, Path(max_length=64)], gw: GatewayDep, admin: AdminDep) -> dict[str, Any]:
    status = await (await _queue(gw)).get_send(admin.namespace, send_id)
    return dict(status.to_dict())


@router.get("/sends", response_model=SendList, responses=responses(400, 401, 503),
            summary="Accepted sends, newest first; pass next_cursor as cursor for the next page")
async def list_sends(
    gw: GatewayDep, admin: AdminDep,
    user_id: Annotated[str | None, Query(max_length=512)] = None,
    state: Annotated[Literal["pending", "completed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SENDS_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    before = None
    if cursor:
        created, _, last_id = cursor.partition(":")
        try:
            before = (float(created), last_id)
        except ValueError:
            raise ApiError(400, "cursor is not one this API returned") from None
    sends = await (await _queue(gw)).list_sends(admin.namespace, user_id=user_id or "", state=state or "", limit=limit,
                                        before=before)
    next_cursor = f"{sends[-1].created_at!r}:{sends[-1].id}" if len(sends) == limit else None
    return {"sends": [s.to_dict() for s in sends], "next_cursor": next_cursor}


@router.get("/outbox", response_model=OutboxList, responses=responses(400, 401, 503),
            summary="What the outbox provider delivered in this namespace (oldest first)")
async def outbox(
    gw: GatewayDep, admin: AdminDep, limit: Annotated[int, Query(ge=1, le=MAX_OUTBOX_LIMIT)] = 100
) -> OutboxList:
    records = await gw.svc.store.list_deliveries(admin.namespace, limit)
    return OutboxList(deliveries=[OutboxEntry(**r.to_dict()) for r in records])
