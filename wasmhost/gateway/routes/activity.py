"""What a namespace did recently, for its admin: a function's last invocations and per-minute usage.

Read from the store (see `gateway.activity`), so every gateway process answers the same: this process's
unwritten activity is written first, another process's arrives within its one-second write interval.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from ..activity import KEEP_PER_FUNCTION, MAX_AGE_SECONDS
from ..errors import responses
from ..identity import AdminDep
from ..models import FUNCTION_PATTERN, InvocationErrorView, LogView, SendErrorView
from ..state import Gateway, get_gateway

router = APIRouter(tags=["activity"])

GatewayDep = Annotated[Gateway, Depends(get_gateway)]

#: Most minutes one usage read covers (the counters are kept for `MAX_AGE_SECONDS`).
MAX_USAGE_MINUTES = MAX_AGE_SECONDS // 60


class RecentSendView(BaseModel):
    user_id: str | None
    ok: bool
    devices_attempted: int
    devices_succeeded: int
    error: SendErrorView | None


class RecentInvocationView(BaseModel):
    id: int
    at: float = Field(description="Unix time the invocation finished")
    outcome: str = Field(description="ok, guest_error, or the sandbox's error kind (out_of_fuel, timeout …)")
    ok: bool
    code: int | None
    error: InvocationErrorView | None
    output: str = Field(description="The output as text, cut at 2048 characters")
    output_truncated: bool
    logs: list[LogView]
    logs_dropped: int = Field(description="Log lines not kept (each record is at most 16 KiB)")
    sends: list[RecentSendView]
    fuel_used: int
    duration_ms: float


class RecentInvocations(BaseModel):
    function: str
    invocations: list[RecentInvocationView]


class InvocationUsage(BaseModel):
    minute: int = Field(description="Unix time of the minute's start")
    outcome: str
    count: int
    mean_ms: float


class DeliveryUsage(BaseModel):
    minute: int = Field(description="Unix time of the minute's start")
    provider: str
    outcome: str = Field(description="success, or the failure kind")
    count: int


class NamespaceUsage(BaseModel):
    namespace: str
    since: int = Field(description="Unix time of the first minute covered")
    now: float
    invocations: list[InvocationUsage]
    deliveries: list[DeliveryUsage]


@router.get(
    "/v1/functions/{name}/invocations", response_model=RecentInvocations, responses=responses(400, 401, 404, 503),
    summary=f"The function's last invocations (at most {KEEP_PER_FUNCTION}, none older than a day), newest first",
)
async def recent_invocations(
    name: Annotated[str, Path(pattern=FUNCTION_PATTERN)],
    gw: GatewayDep,
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=KEEP_PER_FUNCTION)] = KEEP_PER_FUNCTION,
) -> RecentInvocations:
    store = gw.svc.store
    await store.get_function(admin.namespace, name, with_module=False)  # 404 unless it is this namespace's
    await gw.activity.flush()
    rows = await store.list_invocations(admin.namespace, name, limit)
    return RecentInvocations(
        function=name, invocations=[RecentInvocationView.model_validate(r.to_dict()) for r in rows]
    )


@router.get(
    "/v1/namespace/usage", response_model=NamespaceUsage, responses=responses(400, 401, 503),
    summary="This namespace's invocations (by outcome, with mean latency) and deliveries (by provider and "
            "outcome) per minute",
)
async def usage(
    gw: GatewayDep,
    admin: AdminDep,
    minutes: Annotated[int, Query(ge=1, le=MAX_USAGE_MINUTES, description="How far back")] = 60,
) -> dict[str, Any]:
    await gw.activity.flush()
    now = time.time()
    first = int(now // 60) - minutes + 1
    rows = await gw.svc.store.usage_since(admin.namespace, first)
    invocations, deliveries = [], []
    for row in rows:
        if row.metric == "invocation":
            invocations.append({"minute": row.minute * 60, "outcome": row.label, "count": row.count,
                                "mean_ms": round(row.total_ms / row.count, 3) if row.count else 0.0})
        elif row.metric == "delivery":
            provider, _, outcome = row.label.partition(":")
            deliveries.append({"minute": row.minute * 60, "provider": provider, "outcome": outcome,
                               "count": row.count})
    return {"namespace": admin.namespace, "since": first * 60, "now": now, "invocations": invocations,
            "deliveries": deliveries}
