"""Function routes: deploy (validated at upload), list, inspect, delete and invoke tenant modules.

A guest that traps, runs out of fuel or time is a 200 with ``ok: false``: the request was served, the
guest failed. Only a gateway fault is a 5xx.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from ...runtime import InvalidModule, Limits
from ...store.base import FunctionRecord
from ..bodies import read_capped
from ..errors import ApiError, responses
from ..identity import AdminDep
from ..models import FUNCTION_PATTERN, FunctionList, FunctionView, InvocationView, Status
from ..state import Compiled, Gateway, get_gateway

router = APIRouter(prefix="/v1/functions", tags=["functions"])

GatewayDep = Annotated[Gateway, Depends(get_gateway)]
NamePath = Annotated[str, Path(pattern=FUNCTION_PATTERN, description="letters, digits, '_', '.', '-'")]

_MODULE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The module: binary wasm (application/wasm) or WAT text",
        "content": {
            "application/wasm": {"schema": {"type": "string", "format": "binary"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}
_INPUT_BODY = {
    "requestBody": {
        "required": False,
        "description": "The invocation input, handed to the guest as bytes",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def _limit_query(name: str) -> Any:
    return Query(ge=1, le=Limits.MAXIMA[name], description=f"at most {Limits.MAXIMA[name]}")


def _view(record: FunctionRecord) -> FunctionView:
    try:
        limits = Limits.from_dict(record.limits).to_dict()
    except ValueError:  # stored under older maxima: show what an invoke will use
        limits = Limits().to_dict()
    return FunctionView.model_validate(
        {"name": record.name, "sha256": record.sha256, "size": record.size, "limits": limits,
         "created_at": record.created_at, "updated_at": record.updated_at}
    )


async def _compile(gw: Gateway, namespace: str, source: bytes) -> Compiled:
    # Bounded in time and memory, in a child process, in a slot shared fairly between namespaces.
    return await gw.svc.runtime.compile_async(source, namespace=namespace)


def _check_quota(gw: Gateway, existing: list[FunctionRecord], name: str, size: int) -> None:
    """Per-namespace quotas on functions and module bytes (a replaced function's old bytes do not count)."""
    others = [r for r in existing if r.name != name]
    cap = gw.config.max_functions_per_namespace
    if len(others) >= cap:
        raise ApiError(409, f"the namespace already has {len(others)} functions; the limit is {cap} "
                            "(WASMHOST_MAX_FUNCTIONS_PER_NAMESPACE); delete one first")
    total = sum(r.size for r in others) + size
    cap = gw.config.max_namespace_module_bytes
    if total > cap:
        raise ApiError(413, f"the namespace's modules would total {total:,} bytes; the limit is {cap:,} "
                            "(WASMHOST_MAX_NAMESPACE_MODULE_BYTES); delete or shrink a function first")


async def _drop_unused(gw: Gateway, namespace: str, sha256: str) -> None:
    """Delete the compiled artifacts of ``sha256`` unless another function of the namespace uses the bytes."""
    remaining = await gw.svc.store.list_functions(namespace)
    if all(r.sha256 != sha256 for r in remaining):
        await asyncio.to_thread(gw.svc.runtime.forget, namespace, sha256)


@router.put(
    "/{name}", response_model=FunctionView, responses=responses(400, 401, 409, 413, 503), openapi_extra=_MODULE_BODY,
    summary="Deploy a module (validated now); limits are query parameters within the platform maxima",
)
async def deploy(
    name: NamePath,
    request: Request,
    gw: GatewayDep,
    admin: AdminDep,
    fuel: Annotated[int | None, _limit_query("fuel")] = None,
    timeout_ms: Annotated[int | None, _limit_query("timeout_ms")] = None,
    memory_mb: Annotated[int | None, _limit_query("memory_mb")] = None,
    max_output_bytes: Annotated[int | None, _limit_query("max_output_bytes")] = None,
    max_log_lines: Annotated[int | None, _limit_query("max_log_lines")] = None,
    max_log_line_bytes: Annotated[int | None, _limit_query("max_log_line_bytes")] = None,
    max_sends: Annotated[int | None, _limit_query("max_sends")] = None,
) -> FunctionView:
    given = {
        "fuel": fuel, "timeout_ms": timeout_ms, "memory_mb": memory_mb, "max_output_bytes": max_output_bytes,
        "max_log_lines": max_log_lines, "max_log_line_bytes": max_log_line_bytes, "max_sends": max_sends,
    }
    unknown = sorted(set(request.query_params) - set(given))
    if unknown:
        raise ApiError(400, f"unknown limit(s): {', '.join(unknown)}; known: {', '.join(given)}")
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        limits = Limits.from_dict(overrides)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    source = await read_capped(request, gw.config.max_module_bytes, "the module limit, WASMHOST_MAX_MODULE_BYTES")
    if not source.strip():
        raise ApiError(400, "the body must be the module (binary wasm or WAT text)")
    existing = await gw.svc.store.list_functions(admin.namespace)
    _check_quota(gw, existing, name, len(source))
    try:
        module = await _compile(gw, admin.namespace, source)
    except InvalidModule as exc:
        raise ApiError(400, f"invalid module: {exc}") from None
    initial = getattr(module, "memory_min_bytes", 0)
    if initial > limits.memory_bytes:
        raise ApiError(400, f"invalid module: its memory starts at {initial >> 20} MiB, over this function's "
                            f"memory_mb={limits.memory_mb}; raise memory_mb or shrink the module's initial memory")
    record = await gw.svc.store.put_function(admin.namespace, name, source, overrides)
    replaced = next((r.sha256 for r in existing if r.name == name and r.sha256 != record.sha256), None)
    if replaced is not None:
        await _drop_unused(gw, admin.namespace, replaced)
    return _view(record)


@router.get("", response_model=FunctionList, responses=responses(401, 503), summary="This namespace's functions")
async def list_functions(gw: GatewayDep, admin: AdminDep) -> FunctionList:
    return FunctionList(functions=[_view(r) for r in await gw.svc.store.list_functions(admin.namespace)])


@router.get("/{name}", response_model=FunctionView, responses=responses(400, 401, 404, 503),
            summary="One function's metadata")
async def get_function(name: NamePath, gw: GatewayDep, admin: AdminDep) -> FunctionView:
    return _view(await gw.svc.store.get_function(admin.namespace, name, with_module=False))


@router.delete("/{name}", response_model=Status, responses=responses(400, 401, 404, 503), summary="Delete a function")
async def delete_function(name: NamePath, gw: GatewayDep, admin: AdminDep) -> Status:
    record = await gw.svc.store.get_function(admin.namespace, name, with_module=False)
    await gw.svc.store.delete_function(admin.namespace, name)
    await _drop_unused(gw, admin.namespace, record.sha256)
    return Status(status="deleted")


async def _load(gw: Gateway, namespace: str, name: str) -> tuple[Compiled, Limits]:
    store = gw.svc.store
    record = await gw.cached.function(namespace, name)
    try:
        limits = Limits.from_dict(record.limits)
    except ValueError as exc:
        raise ApiError(400, f"the function's stored limits are no longer valid; deploy it again ({exc})") from None
    module = gw.svc.runtime.cached(namespace, record.sha256)
    if module is None:
        full = await store.get_function(namespace, name)
        try:
            module = await _compile(gw, namespace, full.module)
        except InvalidModule as exc:
            raise ApiError(400, f"the stored module no longer validates; deploy it again ({exc})") from None
    return module, limits


@router.post(
    "/{name}/invoke", response_model=InvocationView, responses=responses(400, 401, 404, 413, 429, 503),
    openapi_extra=_INPUT_BODY,
    summary="Run the function once with the body as input; a trapped or timed-out guest is 200 with ok: false",
)
async def invoke(name: NamePath, request: Request, gw: GatewayDep, admin: AdminDep) -> JSONResponse:
    payload = await read_capped(request, gw.config.max_input_bytes, "the input limit, WASMHOST_MAX_INPUT_BYTES")
    module, limits = await _load(gw, admin.namespace, name)
    async with gw.invocation_slot(admin.namespace):
        await gw.send_limiter.prepare(admin.namespace)  # on a fleet: tokens for the guest's sends, if any
        result = await gw.svc.runtime.invoke(admin.namespace, module, payload, limits)
    gw.metrics.record_invocation(result)
    gw.activity.invocation(admin.namespace, name, result)
    out = result.to_dict()
    out["output_base64"] = _binary_output(result.output_bytes)
    # A response, not a model: the result is built to `InvocationView`'s shape already, and validating
    # and re-serialising it through pydantic cost every invocation (the schema still documents it).
    return JSONResponse(out)


def _binary_output(data: bytes) -> str | None:
    """The exact output when it is not UTF-8 text (``output`` then has replacement characters)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode()
    return None
