"""Caps that answer at once (no waiting; callers turn "no" into 429 + Retry-After): per namespace, sends per
minute (a token bucket shared by HTTP and guest sends) and invocations in progress, per namespace and in
total; per client address, failed authentications. The counters live in a `CapTable` shared by every
worker process of the gateway, so the caps hold for the gateway as a whole, not per process."""

from __future__ import annotations

import math

from .errors import ApiError
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

    def try_acquire(self, namespace: str) -> bool:
        return self._table.take_token(namespace, self.per_minute)

    def retry_after(self, namespace: str) -> int:
        """Whole seconds until the next send would be allowed (at least 1)."""
        tokens = self._table.tokens(namespace, self.per_minute)
        return max(1, math.ceil((1.0 - tokens) * 60.0 / self.per_minute))

    def acquire_or_429(self, namespace: str) -> None:
        if not self.try_acquire(namespace):
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
    """Caps on invocations in progress: per namespace and for the whole gateway."""

    def __init__(self, per_namespace: int, total: int, table: CapTable) -> None:
        self.per_namespace = per_namespace
        self.total = total
        self._table = table

    @property
    def in_use(self) -> int:
        return self._table.in_progress()

    def acquire(self, namespace: str) -> None:
        """Take a slot, or raise 429 with Retry-After. Pair with `release`."""
        refused = self._table.try_begin(namespace, self.per_namespace, self.total)
        if refused == "namespace":
            raise ApiError(
                429, f"this namespace already has {self.per_namespace} invocations in progress "
                     f"(the limit is {self.per_namespace})",
                {"Retry-After": "1"},
            )
        if refused is not None:
            raise ApiError(429, "the gateway is at its invocation limit; try again shortly", {"Retry-After": "1"})

    def release(self, namespace: str) -> None:
        self._table.end(namespace)
