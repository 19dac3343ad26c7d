"""Operations: liveness with a store check, and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from ..errors import ErrorBody, error_response
from ..metrics import CONTENT_TYPE_LATEST
from ..models import Health
from ..state import Gateway, get_gateway

router = APIRouter(tags=["operations"])

GatewayDep = Annotated[Gateway, Depends(get_gateway)]


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
                     "description": "Prometheus text format"}},
    summary="Prometheus metrics (no per-namespace labels)",
)
async def metrics(gw: GatewayDep) -> Response:
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
