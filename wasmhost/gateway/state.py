"""What the routes share: the opened services plus the gateway's config, caps and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Request

from ..runtime import CompiledComponent, CompiledModule
from ..services import Services
from .activity import Activity
from .config import GatewayConfig
from .errors import ApiError
from .limits import AuthFailureThrottle, InvocationSlots, SendRateLimiter
from .metrics import Metrics
from .readcache import ReadCache

__all__ = ["Compiled", "Gateway", "get_gateway"]

Compiled = CompiledModule | CompiledComponent


@dataclass
class Gateway:
    config: GatewayConfig
    metrics: Metrics
    send_limiter: SendRateLimiter
    slots: InvocationSlots
    auth_throttle: AuthFailureThrottle
    services: Services | None = None
    reads: ReadCache | None = None
    #: Recent invocations and usage counters, written to the store (the console's Functions and Usage pages).
    activity: Activity = field(init=False)

    def __post_init__(self) -> None:
        self.activity = Activity(lambda: self.services.store if self.services is not None else None)

    @property
    def svc(self) -> Services:
        if self.services is None:
            raise ApiError(503, "the gateway is starting or stopping")
        return self.services

    @property
    def cached(self) -> ReadCache:
        if self.reads is None:
            raise ApiError(503, "the gateway is starting or stopping")
        return self.reads

    @asynccontextmanager
    async def invocation_slot(self, namespace: str) -> AsyncIterator[None]:
        """Hold an invocation slot (429 when the namespace or the gateway is at its cap), counted in metrics."""
        try:
            await self.slots.acquire(namespace)
        except ApiError:
            self.metrics.rate_limited.labels(cap="concurrent_invocations").inc()
            raise
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            self.slots.release(namespace)


async def get_gateway(request: Request) -> Gateway:
    # async: FastAPI runs a plain-def dependency on a thread pool, a thread hop per request.
    gw = request.app.state.gateway
    assert isinstance(gw, Gateway)
    return gw
