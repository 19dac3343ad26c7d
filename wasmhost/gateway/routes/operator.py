"""Operator routes: create namespaces and manage their API keys (``WASMHOST_ADMIN_TOKEN``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from ...store.base import StoreError
from ..bodies import KIB, LimitedRoute, capped
from ..errors import ApiError, responses
from ..identity import OperatorDep, new_api_key
from ..models import NAMESPACE_PATTERN, CreateNamespace, KeyCreated, KeyInfo, KeyList, NamespaceList, Status
from ..state import Gateway, get_gateway

router = APIRouter(prefix="/v1/namespaces", tags=["operator"], route_class=LimitedRoute)

GatewayDep = Annotated[Gateway, Depends(get_gateway)]
NamespacePath = Annotated[str, Path(pattern=NAMESPACE_PATTERN)]


async def _require_namespace(gw: Gateway, namespace: str) -> None:
    if not await gw.svc.store.namespace_exists(namespace):
        raise ApiError(404, f"namespace {namespace!r} not found")


async def _issue_key(gw: Gateway, namespace: str) -> KeyCreated:
    key_id, api_key, key_hash = new_api_key()
    await gw.svc.store.add_api_key(namespace, key_id, key_hash)
    return KeyCreated(namespace=namespace, key_id=key_id, api_key=api_key)


@router.post(
    "", status_code=201, response_model=KeyCreated, responses=responses(400, 401, 409, 413, 503),
    openapi_extra=capped(1 * KIB), summary="Create a namespace and its first API key",
)
async def create_namespace(body: CreateNamespace, gw: GatewayDep, _: OperatorDep) -> KeyCreated:
    store = gw.svc.store
    if await store.namespace_exists(body.name):
        raise ApiError(409, f"namespace {body.name!r} already exists")
    try:
        await store.create_namespace(body.name)
    except StoreError:
        if await store.namespace_exists(body.name):  # lost a race with another create
            raise ApiError(409, f"namespace {body.name!r} already exists") from None
        raise
    return await _issue_key(gw, body.name)


@router.get("", response_model=NamespaceList, responses=responses(401, 503), summary="List namespaces")
async def list_namespaces(gw: GatewayDep, _: OperatorDep) -> NamespaceList:
    return NamespaceList(namespaces=await gw.svc.store.list_namespaces())


@router.post(
    "/{namespace}/keys", status_code=201, response_model=KeyCreated, responses=responses(400, 401, 404, 503),
    summary="Add an API key to a namespace",
)
async def add_key(namespace: NamespacePath, gw: GatewayDep, _: OperatorDep) -> KeyCreated:
    await _require_namespace(gw, namespace)
    return await _issue_key(gw, namespace)


@router.get(
    "/{namespace}/keys", response_model=KeyList, responses=responses(400, 401, 404, 503),
    summary="List a namespace's API keys (ids only)",
)
async def list_keys(namespace: NamespacePath, gw: GatewayDep, _: OperatorDep) -> KeyList:
    await _require_namespace(gw, namespace)
    keys = await gw.svc.store.list_api_keys(namespace)
    return KeyList(namespace=namespace, keys=[KeyInfo(key_id=k.id, created_at=k.created_at) for k in keys])


@router.delete(
    "/{namespace}/keys/{key_id}", response_model=Status, responses=responses(400, 401, 404, 503),
    summary="Revoke an API key (effective on the next request)",
)
async def revoke_key(
    namespace: NamespacePath, key_id: Annotated[str, Path(max_length=64)], gw: GatewayDep, _: OperatorDep
) -> Status:
    await gw.svc.store.revoke_api_key(namespace, key_id)
    return Status(status="revoked")
