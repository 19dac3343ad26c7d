"""`MemoryCapLedger`: the fleet's cap counters (`wasmhost.store.fleetcaps.CapLedger`) in memory, on a clock
the test controls, with the semantics of the PostgreSQL statements. For unit tests of the gateway's side
(`wasmhost.gateway.fleetcaps`); the statements themselves are tested against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..store.fleetcaps import SendGrant

__all__ = ["MemoryCapLedger"]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class MemoryCapLedger:
    clock: Callable[[], float]
    #: Raise this from every call (a database that cannot be reached).
    failure: Exception | None = None
    #: Seconds each call waits before answering (a round trip), so concurrent callers overlap.
    delay: float = 0.0
    calls: list[str] = field(default_factory=list)
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    #: namespace -> holder -> (slots, until)
    leases: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)

    async def _enter(self, call: str) -> float:
        self.calls.append(call)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return self.clock()

    def _level(self, namespace: str, per_minute: int, now: float) -> _Bucket:
        bucket = self.buckets.get(namespace)
        if bucket is None:
            bucket = self.buckets[namespace] = _Bucket(float(per_minute), now)
        bucket.tokens = min(float(per_minute), bucket.tokens + max(0.0, now - bucket.stamp) * per_minute / 60.0)
        bucket.stamp = now
        return bucket

    async def take_sends(self, namespace: str, want: int, per_minute: int) -> SendGrant:
        now = await self._enter("take_sends")
        bucket = self._level(namespace, per_minute, now)
        granted = min(want, math.floor(bucket.tokens))
        bucket.tokens -= granted
        return SendGrant(granted, bucket.tokens)

    async def return_sends(self, namespace: str, count: int, per_minute: int) -> None:
        now = await self._enter("return_sends")
        if namespace in self.buckets:
            bucket = self._level(namespace, per_minute, now)
            bucket.tokens = min(float(per_minute), bucket.tokens + count)

    def live(self, namespace: str) -> dict[str, int]:
        now = self.clock()
        return {h: n for h, (n, until) in self.leases.get(namespace, {}).items() if until > now}

    async def lease_slots(self, namespace: str, holder: str, target: int, cap: int, ttl: float) -> int:
        now = await self._enter("lease_slots")
        live = {h: (n, u) for h, (n, u) in self.leases.get(namespace, {}).items() if u > now}
        mine = live.pop(holder, (0, 0.0))[0]
        others = sum(n for n, _ in live.values())
        new = target if target <= mine else max(mine, min(target, cap - others))
        if new > 0:
            live[holder] = (new, now + ttl)
        self.leases[namespace] = live
        return new

    async def renew_slots(self, holder: str, namespaces: Sequence[str], ttl: float) -> dict[str, int]:
        now = await self._enter("renew_slots")
        held = {}
        for namespace in namespaces:
            entry = self.leases.get(namespace, {}).get(holder)
            if entry is not None and entry[1] > now:
                self.leases[namespace][holder] = (entry[0], now + ttl)
                held[namespace] = entry[0]
        return held

    async def release_slots(self, holder: str, namespaces: Sequence[str]) -> None:
        await self._enter("release_slots")
        for namespace in namespaces:
            self.leases.get(namespace, {}).pop(holder, None)
