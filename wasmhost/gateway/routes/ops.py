"""Operations: liveness with a store check, and Prometheus metrics (operator only, unless the operator
made them public with ``WASMHOST_METRICS_PUBLIC``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import ErrorBody, error_response, responses
from ..identity import require_operator
from ..metrics import CONTENT_TYPE_LATEST
from ..models import Health
from ..state import Gateway, get_gateway

router = APIRouter(tags=["operations"])

GatewayDep = Annotated[Gateway, Depends(get_gateway)]

_metrics_scheme = HTTPBearer(
    scheme_name="operatorToken", description="The operator token (WASMHOST_ADMIN_TOKEN)", auto_error=False
)


async def _metrics_reader(
    gw: GatewayDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics_scheme)],
    request: Request,
) -> None:
    if not gw.config.metrics_public:
        await require_operator(gw, credentials, request)


@router.get(
    "/healthz", response_model=Health,
    responses={503: {"model": ErrorBody, "description": "The store is unreachable"}},
    summary="Liveness: 200 when the store answers",
)
async def healthz(gw: GatewayDep) -> JSONResponse:
    try:
        await gw.svc.store.ping()
    except Exception:
        return error_response(503, "the store is unreachable", {"Retry-After": "5"})
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics", response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus text format"}, **responses(401, 429, 503)},
    dependencies=[Depends(_metrics_reader)],
    summary="Prometheus metrics (no per-namespace labels); the operator token unless WASMHOST_METRICS_PUBLIC=1",
)
async def metrics(gw: GatewayDep) -> Response:
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
