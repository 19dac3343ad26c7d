"""Per-namespace caps: sends per minute (a token bucket shared by HTTP and guest sends) and
concurrent invocations; per client address: failed authentications. All answer at once (no waiting);
callers turn "no" into 429 + Retry-After."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache

from .errors import ApiError

__all__ = ["AuthFailureThrottle", "InvocationSlots", "SendRateLimiter"]

#: Namespaces whose buckets are tracked at once; an evicted bucket restarts full.
MAX_TRACKED_NAMESPACES = 100_000
#: Seconds a bucket is kept after its last use; an idle minute refills any bucket completely.
BUCKET_IDLE_SECONDS = 120.0


class SendRateLimiter:
    """Token bucket per namespace: `per_minute` sends, refilled evenly. Thread-safe: the runtime calls
    `try_acquire` where the guest runs (the event loop, or the worker thread for components), the HTTP
    handlers on the event loop."""

    def __init__(self, per_minute: int, *, timer: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._timer = timer
        self._lock = threading.Lock()
        self._buckets: TTLCache[str, tuple[float, float]] = TTLCache(
            maxsize=MAX_TRACKED_NAMESPACES, ttl=BUCKET_IDLE_SECONDS, timer=timer
        )

    def _level(self, namespace: str, now: float) -> float:
        tokens, then = self._buckets.get(namespace, (self.capacity, now))
        return min(self.capacity, tokens + (now - then) * self.rate)

    def try_acquire(self, namespace: str) -> bool:
        with self._lock:
            now = self._timer()
            tokens = self._level(namespace, now)
            if tokens < 1.0:
                self._buckets[namespace] = (tokens, now)
                return False
            self._buckets[namespace] = (tokens - 1.0, now)
            return True

    def retry_after(self, namespace: str) -> int:
        """Whole seconds until the next send would be allowed (at least 1)."""
        with self._lock:
            tokens = self._level(namespace, self._timer())
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def acquire_or_429(self, namespace: str) -> None:
        if not self.try_acquire(namespace):
            raise ApiError(
                429,
                f"this namespace may start at most {int(self.capacity)} sends per minute",
                {"Retry-After": str(self.retry_after(namespace))},
            )


class AuthFailureThrottle(SendRateLimiter):
    """Failed authentications per client address: each failure takes a token; an address with none
    left is answered 429 until one refills. Only failures are counted, and only after the credential
    was checked, so valid credentials are never throttled (see `identity`). Per process: with several
    worker processes an address gets that many budgets."""

    def __init__(self, per_minute: int, *, timer: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_minute, timer=timer)

    def refuse(self, address: str) -> ApiError | None:
        """Count one failure from `address`; the 429 to answer instead of 401 when it is over its budget."""
        if self.try_acquire(address):
            return None
        return ApiError(
            429,
            f"too many failed authentications from this address (at most {int(self.capacity)} a minute)",
            {"Retry-After": str(self.retry_after(address))},
        )


class InvocationSlots:
    """Caps on invocations running or queued: per namespace and in total. Used from the event loop only."""

    def __init__(self, per_namespace: int, total: int) -> None:
        self.per_namespace = per_namespace
        self.total = total
        self._by_namespace: dict[str, int] = {}
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self, namespace: str) -> None:
        """Take a slot, or raise 429 with Retry-After. Pair with `release`."""
        used = self._by_namespace.get(namespace, 0)
        if used >= self.per_namespace:
            raise ApiError(
                429, f"this namespace already has {used} invocations in progress (the limit is {self.per_namespace})",
                {"Retry-After": "1"},
            )
        if self._in_use >= self.total:
            raise ApiError(429, "the gateway is at its invocation limit; try again shortly", {"Retry-After": "1"})
        self._by_namespace[namespace] = used + 1
        self._in_use += 1

    def release(self, namespace: str) -> None:
        self._in_use -= 1
        left = self._by_namespace[namespace] - 1
        if left:
            self._by_namespace[namespace] = left
        else:
            del self._by_namespace[namespace]
