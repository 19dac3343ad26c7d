"""The ASGI app: routers, error handlers, the OpenAPI document, and a lifespan that owns `Services`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..console import router as console_router
from ..services import Services, Settings
from ..store.fleetcaps import CapLedger
from .activity import TeeObserver
from .config import GatewayConfig
from .errors import install_error_handlers
from .fleetcaps import FleetSends, FleetSlots
from .identity import NAMESPACE_HEADER
from .limits import AuthFailureThrottle, InvocationSlots, SendRateLimiter
from .metrics import ChangeFeedCollector, DeliveryQueueCollector, FleetCapsCollector, Metrics, WebhookCollector
from .readcache import ReadCache
from .routes import activity, devices, functions, namespace, operator, ops, push, users, webhooks
from .sharedcaps import WorkerGroup
from .state import Gateway

__all__ = ["create_app", "gateway_lifespan"]

DESCRIPTION = f"""
Self-serve gateway for wasmhost tenants.

* **Operator** (`Authorization: Bearer $WASMHOST_ADMIN_TOKEN`): creates namespaces and their API keys.
* **Namespace admin** (`Authorization: Bearer whk_…`): the namespace comes from the key, never from the
  URL or body. Configures push, user-token verification, functions; sends.
* **App user** (`Authorization: Bearer <JWT>` + `{NAMESPACE_HEADER}`): a token issued by the tenant's own
  backend, verified with the namespace's settings; `sub` is the user id. Manages the user's own devices.

Every error is JSON `{{"error": "…"}}`. Another namespace's object is a 404.
"""


class _SafeHeaders:
    """Responses may carry a fresh API key: never cache them, never let a browser sniff them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _openapi(app: FastAPI, gateway: Gateway) -> dict[str, Any]:
    """FastAPI's document, minus its default 422 answers (bad input here is a 400 `{"error"}`), with the
    provider names this build supports as enums."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    providers = sorted(gateway.services.specs) if gateway.services else None
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            operation.get("responses", {}).pop("422", None)
            for param in operation.get("parameters", []):
                if providers and param.get("name") == "provider":
                    param["schema"]["enum"] = providers
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    if providers and "DeviceIn" in components:
        components["DeviceIn"]["properties"]["provider"]["enum"] = providers
    if gateway.services is not None:
        app.openapi_schema = schema  # only cache the complete document
    return schema


def gateway_lifespan(app: FastAPI) -> AbstractAsyncContextManager[object]:
    """The startup and shutdown of a gateway made by `create_app`, for an app that mounts it.

    Starlette runs only the outermost app's lifespan, so a mounted gateway would never open its
    `Services` (every route answers 503). Enter this in the host app's own lifespan instead::

        @asynccontextmanager
        async def lifespan(app):
            async with gateway_lifespan(gateway):
                yield
    """
    if not isinstance(getattr(app.state, "gateway", None), Gateway):
        raise TypeError("gateway_lifespan takes an app made by wasmhost.create_app")
    return app.router.lifespan_context(app)


def _fleet_caps(services: Services, config: GatewayConfig) -> tuple[FleetSends | None, FleetSlots | None]:
    """On a store that gateways share (PostgreSQL), the per-namespace caps are the fleet's (`fleetcaps`)."""
    opener = getattr(services.store, "cap_ledger", None)
    if opener is None:
        return None, None
    ledger: CapLedger = opener()
    sends = FleetSends(ledger, config.sends_per_minute)
    slots = FleetSlots(ledger, config.max_concurrent_invocations, ttl=float(config.slot_lease_seconds))
    sends.start()
    slots.start()
    return sends, slots


def create_app(
    settings: Settings | None = None, config: GatewayConfig | None = None, *, group: WorkerGroup | None = None
) -> FastAPI:
    """The gateway app. `Services` is opened on startup and closed on shutdown (provider clients too).

    Served by itself (``uvicorn``, `serve`) the server runs that lifespan; mounted inside another app,
    enter `gateway_lifespan` in the host app's lifespan. ``group`` is what the app shares with the other
    worker processes of the gateway (`server`: caps, metrics); without one the app is a whole gateway."""
    settings = settings or Settings.from_env()
    config = config or GatewayConfig.from_env()
    group = group or WorkerGroup.single()
    caps = group.caps
    metrics = Metrics(group.metrics_dir, group.caps.worker)
    gateway = Gateway(
        config=config,
        metrics=metrics,
        send_limiter=SendRateLimiter(config.sends_per_minute, caps),
        slots=InvocationSlots(config.max_concurrent_invocations, config.max_total_invocations, caps),
        auth_throttle=AuthFailureThrottle(config.auth_failures_per_minute, caps),
    )
    metrics.registry.register(ChangeFeedCollector(lambda: gateway.services))  # fleet: listener health
    metrics.registry.register(DeliveryQueueCollector(lambda: gateway.services))
    metrics.registry.register(WebhookCollector(lambda: gateway.services))
    metrics.registry.register(FleetCapsCollector(lambda: (gateway.send_limiter.fleet, gateway.slots.fleet)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.open(
            settings, observer=TeeObserver(metrics.observer, gateway.activity), send_limiter=gateway.send_limiter
        )
        fleet_sends, fleet_slots = _fleet_caps(services, config)
        gateway.send_limiter.fleet, gateway.slots.fleet = fleet_sends, fleet_slots
        reads = ReadCache(services.store, settings.dispatcher_ttl)
        unsubscribe = services.changes.subscribe(reads.on_change) if services.changes is not None else None
        gateway.services, gateway.reads = services, reads
        gateway.activity.start()
        metrics.start()
        gateway.services.start_delivery()
        try:
            yield
        finally:
            metrics.stop()
            await gateway.activity.aclose()
            gateway.services = gateway.reads = None
            gateway.send_limiter.fleet = gateway.slots.fleet = None
            if fleet_sends is not None and fleet_slots is not None:  # before the store closes: they give back
                await fleet_slots.aclose()
                await fleet_sends.aclose()
            if unsubscribe is not None:
                unsubscribe()
            await services.aclose()

    app = FastAPI(
        title="wasmhost gateway",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        redirect_slashes=False,  # a wrong path is a 404: a redirect would echo the Host header back
    )
    app.state.gateway = gateway
    install_error_handlers(app)
    # Starlette tries routes in order: the hot paths (invoke, send) first, so a request does not try
    # thirty other routes before its own (bench/README.md, "Gateway"). No prefix overlaps another.
    modules = (functions, push, devices, users, namespace, webhooks, operator, activity, ops)
    routers = [module.router for module in modules]
    for router in routers:
        app.include_router(router)
    # For the 405 handler's Allow header: every method of every route, whatever the path.
    app.state.api_routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    app.include_router(console_router)  # static pages; not part of the API (no route of its own there)
    app.add_middleware(_SafeHeaders)
    app.openapi = lambda: _openapi(app, gateway)  # type: ignore[method-assign]
    return app
