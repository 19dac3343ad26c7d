"""Caps that answer at once (callers turn "no" into 429 + Retry-After): per namespace, sends per minute (a
token bucket shared by HTTP and guest sends) and invocations in progress, per namespace and in total; per
client address, failed authentications. The counters live in a `CapTable` shared by every worker process
of the gateway, so the caps hold for the gateway as a whole, not per process.

On PostgreSQL the per-namespace caps hold for the fleet: `SendRateLimiter.fleet` and `InvocationSlots.fleet`
(`fleetcaps`) draw from counters every gateway shares, in batches, so only a request that finds its
process's batch spent waits for the database; without them (SQLite, one gateway) nothing changes."""

from __future__ import annotations

import math

from ..store import StoreError
from .errors import ApiError
from .fleetcaps import FleetSends, FleetSlots
from .sharedcaps import CapTable

__all__ = ["AuthFailureThrottle", "InvocationSlots", "SendRateLimiter"]


class SendRateLimiter:
    """Token bucket per namespace: `per_minute` sends, refilled evenly. Thread-safe: the runtime calls
    `try_acquire` where the guest runs, the HTTP handlers on the event loop."""

    def __init__(self, per_minute: int, table: CapTable) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._table = table
        #: The fleet's buckets (PostgreSQL), which replace the gateway's own table when set.
        self.fleet: FleetSends | None = None

    def try_acquire(self, namespace: str) -> bool:
        """Never waits (guests call it where they run): on a fleet, from this process's granted tokens."""
        if self.fleet is not None:
            return self.fleet.try_take(namespace)
        return self._table.take_token(namespace, self.per_minute)

    async def prepare(self, namespace: str) -> None:
        """Before a guest runs: on a fleet, make sure this process holds tokens for its sends if the fleet has
        any (a guest cannot wait for a grant). Waits for the database only when the pool is empty. A ledger
        that cannot be reached does not stop the invocation: its guest's sends answer UNAVAILABLE."""
        if self.fleet is not None:
            try:
                await self.fleet.ensure(namespace)
            except StoreError:
                pass

    def retry_after(self, namespace: str) -> int:
        """Whole seconds until the next send would be allowed (at least 1)."""
        if self.fleet is not None:
            return self.fleet.retry_after(namespace)
        tokens = self._table.tokens(namespace, self.per_minute)
        return max(1, math.ceil((1.0 - tokens) * 60.0 / self.per_minute))

    async def acquire_or_429(self, namespace: str) -> None:
        allowed = await self.fleet.take(namespace) if self.fleet is not None else self.try_acquire(namespace)
        if not allowed:
            raise ApiError(
                429,
                f"this namespace may start at most {self.per_minute} sends per minute",
                {"Retry-After": str(self.retry_after(namespace))},
            )


class AuthFailureThrottle:
    """Failed authentications per client address: each failure takes a token; an address with none
    left is answered 429 until one refills. Only failures are counted, and only after the credential
    was checked, so valid credentials are never throttled (see `identity`)."""

    #: Keeps addresses' buckets apart from namespaces' in the shared table (no namespace has a NUL).
    PREFIX = "\0auth\0"

    def __init__(self, per_minute: int, table: CapTable) -> None:
        self._buckets = SendRateLimiter(per_minute, table)

    def refuse(self, address: str) -> ApiError | None:
        """Count one failure from `address`; the 429 to answer instead of 401 when it is over its budget."""
        key = self.PREFIX + address
        if self._buckets.try_acquire(key):
            return None
        return ApiError(
            429,
            f"too many failed authentications from this address (at most {self._buckets.per_minute} a minute)",
            {"Retry-After": str(self._buckets.retry_after(key))},
        )


class InvocationSlots:
    """Caps on invocations in progress: per namespace and for the whole gateway (in the gateway's table),
    and on a fleet per namespace across every gateway (`fleet`, checked after the gateway's own)."""

    def __init__(self, per_namespace: int, total: int, table: CapTable) -> None:
        self.per_namespace = per_namespace
        self.total = total
        self._table = table
        self.fleet: FleetSlots | None = None

    @property
    def in_use(self) -> int:
        return self._table.in_progress()

    async def acquire(self, namespace: str) -> None:
        """Take a slot, or raise 429 with Retry-After (503 when the fleet's counters cannot be reached).
        Pair with `release`."""
        refused = self._table.try_begin(namespace, self.per_namespace, self.total)
        if refused == "namespace":
            raise ApiError(
                429, f"this namespace already has {self.per_namespace} invocations in progress "
                     f"(the limit is {self.per_namespace})",
                {"Retry-After": "1"},
            )
        if refused is not None:
            raise ApiError(429, "the gateway is at its invocation limit; try again shortly", {"Retry-After": "1"})
        if self.fleet is None:
            return
        try:
            leased = await self.fleet.acquire(namespace)
        except BaseException:
            self._table.end(namespace)
            raise
        if not leased:
            self._table.end(namespace)
            raise ApiError(
                429, f"this namespace already has {self.per_namespace} invocations in progress across the "
                     f"gateways (the limit is {self.per_namespace})",
                {"Retry-After": "1"},
            )

    def release(self, namespace: str) -> None:
        if self.fleet is not None:
            self.fleet.release(namespace)
        self._table.end(namespace)
