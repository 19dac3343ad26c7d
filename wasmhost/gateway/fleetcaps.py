"""Per-namespace caps for a fleet: every gateway on one PostgreSQL draws from shared counters in batches
(`store.fleetcaps.CapLedger`) and spends locally, so a request in the steady state makes no round trip.

`FleetSends` (sends per minute): each process holds a pool of send tokens per namespace, granted by the
fleet's bucket ``grant_size(per_minute)`` at a time. A send spends one locally; when the pool falls to
half a grant, the next grant is fetched in the background. Only a send that finds the pool empty waits
for a grant (an HTTP send; an invocation before its guest starts, so guests, which cannot wait, find
tokens), and only when the fleet's bucket is not known to be empty: after a grant that drained the
bucket, the process refuses at once until the bucket has refilled by a grant, so a namespace over its
cap costs no round trip per refused request either.

`FleetSlots` (invocations in progress): each process leases slots per namespace from the fleet, one more
whenever it needs one, and keeps a slot it used recently: an invocation that finds a free leased slot
makes no round trip. Slots left unused for a tick (`SLOT_TICK`) go back, so another gateway can lease
them; leases are renewed in one statement every third of their period and lapse when not renewed, so a
crashed process's slots come back after one period. Every decision is made by the ledger's single-row
upsert, so the live leases never add up to more than the cap.

Both keep their state per process (not in the gateway's shared-memory `CapTable`): a grant or a lease
is a database exchange, which each worker process makes on its own connections, and the fleet's counters
already hold the whole fleet, this gateway's workers included. The bounds this gives are in
docs/fleet.md ("Per-namespace caps across the fleet").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..store.fleetcaps import CapLedger, SendGrant

__all__ = ["SLOT_TICK", "FleetSends", "FleetSlots", "grant_size"]

LOG = logging.getLogger("wasmhost.gateway")

#: A grant is this fraction of the per-minute budget (at least one token): 30 of the default 600.
GRANT_FRACTION = 20
#: Namespaces whose pools a process keeps (least recently used dropped: their tokens are forgotten).
MAX_NAMESPACES = 10_000
#: After a failed grant (database unreachable), refuse for this long before trying again.
FAILURE_BACKOFF = 1.0
#: How often a process gives back slots it did not use and renews its leases when due, in seconds.
SLOT_TICK = 0.5


def grant_size(per_minute: int) -> int:
    return max(1, math.ceil(per_minute / GRANT_FRACTION))


@dataclass
class _Pool:
    tokens: int = 0
    #: Do not ask the fleet again before this (local monotonic time): its bucket is empty, or it failed.
    quiet_until: float = 0.0
    refill: asyncio.Future[Exception | None] | None = None
    #: Why the last grant failed, while `quiet_until` holds for that reason (the database is unreachable).
    failure: Exception | None = None


class FleetSends:
    """A process's pools of send tokens, one per namespace, refilled from the fleet's buckets.

    `try_take` is thread-safe and never waits (guests call it where they run); `take` and `ensure` run on
    the event loop and may wait for one grant. Call `start` on the loop before use."""

    def __init__(self, ledger: CapLedger, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.per_minute = per_minute
        self.grant = grant_size(per_minute)
        #: Refill in the background when a pool falls to this many tokens.
        self.low_water = self.grant // 2
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._pools: OrderedDict[str, _Pool] = OrderedDict()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Exception | None]] = set()
        self.grants = 0  # grants asked of the fleet (each one round trip)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    def _pool(self, namespace: str) -> _Pool:
        """The namespace's pool (under the lock)."""
        pool = self._pools.get(namespace)
        if pool is None:
            pool = self._pools[namespace] = _Pool()
            while len(self._pools) > MAX_NAMESPACES:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(namespace)
        return pool

    def try_take(self, namespace: str) -> bool:
        """Spend one token if this process holds one; start a background refill when the pool runs low.
        With none left while the ledger cannot be reached, raise why (a guest's send is then UNAVAILABLE,
        not RATE_LIMITED: nothing says the namespace is over its cap)."""
        with self._lock:
            pool = self._pool(namespace)
            ok = pool.tokens > 0
            if ok:
                pool.tokens -= 1
            quiet = self._clock() < pool.quiet_until
            if not ok and quiet and pool.failure is not None:
                raise pool.failure
            low = pool.tokens <= self.low_water and pool.refill is None and not quiet
        if low and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._start_refill, namespace)
            except RuntimeError:  # the loop is closed: the gateway is stopping
                pass
        return ok

    async def take(self, namespace: str) -> bool:
        """Spend one token, waiting for one grant if the pool is empty and the fleet may have tokens.
        Raises what the ledger raised (a `StoreError`: the gateway answers 503) when it could not be asked."""
        if self.try_take(namespace):
            return True
        await self.ensure(namespace)
        return self.try_take(namespace)

    async def ensure(self, namespace: str) -> None:
        """If the pool is empty (and the fleet's bucket is not known to be), wait for a grant. Raises what
        the ledger raised (a `StoreError`: the gateway answers 503) when it could not be asked."""
        with self._lock:
            pool = self._pool(namespace)
            if pool.tokens > 0:
                return
            if self._clock() < pool.quiet_until:
                if pool.failure is not None:
                    raise pool.failure
                return
        # Shielded: the refill is shared by every sender waiting for it, and one cancelled request (a client
        # that went away) must not cancel it for the others.
        failure = await asyncio.shield(self._start_refill(namespace))
        if failure is not None:
            raise failure

    def retry_after(self, namespace: str) -> int:
        """Whole seconds until this process will next ask the fleet for the namespace (at least 1)."""
        with self._lock:
            pool = self._pools.get(namespace)
            wait = pool.quiet_until - self._clock() if pool is not None else 0.0
        return max(1, math.ceil(wait))

    def _start_refill(self, namespace: str) -> asyncio.Future[Exception | None]:
        """The namespace's refill in progress, or a new one (loop thread only: one at a time per namespace)."""
        with self._lock:
            pool = self._pool(namespace)
            if pool.refill is not None:
                return pool.refill
            task = asyncio.ensure_future(self._refill(namespace, pool))
            pool.refill = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refill(self, namespace: str, pool: _Pool) -> Exception | None:
        """Ask for one grant; the failure, if any, is returned (for a waiting sender to raise), not raised,
        so a background refill leaves no unretrieved exception."""
        failure: Exception | None = None
        grant: SendGrant | None = None
        try:
            self.grants += 1
            grant = await self.ledger.take_sends(namespace, self.grant, self.per_minute)
        except Exception as exc:  # noqa: BLE001 - store errors name no values (store.postgres._safe)
            LOG.warning("fleet caps: a send grant failed (%s); refusing that namespace's sends for %.0f s",
                        type(exc).__name__, FAILURE_BACKOFF)
            failure = exc
        finally:  # also when cancelled (the gateway stops): the next sender may start a refill
            with self._lock:
                pool.refill = None
                pool.failure = failure
                now = self._clock()
                if failure is not None:
                    pool.quiet_until = now + FAILURE_BACKOFF
                elif grant is not None:
                    pool.tokens += grant.granted
                    if grant.granted < self.grant:  # the bucket is drained: ask again once it holds a grant
                        pool.quiet_until = now + max(0.0, self.grant - grant.level) / self._rate
        return failure

    def held(self, namespace: str) -> int:
        with self._lock:
            pool = self._pools.get(namespace)
            return pool.tokens if pool is not None else 0

    async def aclose(self) -> None:
        """Stop refilling and give every unspent token back to the fleet (best effort)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with self._lock:
            unspent = [(ns, pool.tokens) for ns, pool in self._pools.items() if pool.tokens > 0]
            self._pools.clear()
        for namespace, count in unspent:
            try:
                await self.ledger.return_sends(namespace, count, self.per_minute)
            except Exception as exc:  # noqa: BLE001 - stopping: the tokens are only lost to the bucket
                LOG.warning("fleet caps: could not give back unspent send tokens (%s)", type(exc).__name__)
                return


@dataclass
class _Lease:
    leased: int = 0
    running: int = 0
    #: Most invocations running at once since the last tick: slots above it go back at the tick.
    peak: int = 0
    #: Local monotonic time until which the lease holds (measured from before it was asked: never later
    #: than the database's own expiry).
    until: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FleetSlots:
    """A process's leases of invocation slots, per namespace, from the fleet's ledger (loop thread only).

    `acquire` answers from a free leased slot when there is one and asks the ledger for one more slot
    otherwise; `release` keeps the slot for the next invocation. A background task (`start`) gives back
    slots unused for a tick and renews leases a third of the way before they end."""

    def __init__(self, ledger: CapLedger, cap: int, *, ttl: float, holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic, tick: float | None = None) -> None:
        if ttl <= 0:
            raise ValueError("the slot lease must be longer than 0 s")
        self.ledger = ledger
        self.cap = cap
        self.ttl = ttl
        self.holder = holder or f"{uuid.uuid4().hex[:12]}"
        self.tick = SLOT_TICK if tick is None else tick
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self.requests = 0  # lease changes asked of the fleet (each one round trip)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._maintain(), name="wasmhost-fleet-slots")

    def _lease(self, namespace: str) -> _Lease:
        lease = self._leases.get(namespace)
        if lease is None:
            lease = self._leases[namespace] = _Lease()
        return lease

    def _take_free(self, lease: _Lease) -> bool:
        if lease.running < lease.leased and self._clock() < lease.until:
            lease.running += 1
            lease.peak = max(lease.peak, lease.running)
            return True
        return False

    async def acquire(self, namespace: str) -> bool:
        """Hold one of the namespace's fleet-wide slots; False when every slot is leased (here or elsewhere).
        Raises what the ledger raises when it cannot be reached. Pair a True with `release`."""
        lease = self._lease(namespace)
        if self._take_free(lease):
            return True
        # Shielded: a request cancelled while its lease change is under way must not cut the change short
        # (the lock would pass on before the ledger's answer is recorded); what it got is released instead.
        grow = asyncio.ensure_future(self._grow(namespace, lease))
        try:
            return await asyncio.shield(grow)
        except asyncio.CancelledError:
            grow.add_done_callback(functools.partial(self._release_if_taken, namespace))
            raise

    async def _grow(self, namespace: str, lease: _Lease) -> bool:
        async with lease.lock:  # one lease change per namespace at a time: each asks for what it counts
            if self._take_free(lease):
                return True
            await self._set(namespace, lease, lease.running + 1)
            return self._take_free(lease)

    def _release_if_taken(self, namespace: str, grow: asyncio.Future[bool]) -> None:
        if not grow.cancelled() and grow.exception() is None and grow.result():
            self.release(namespace)

    def release(self, namespace: str) -> None:
        lease = self._leases.get(namespace)
        if lease is not None and lease.running > 0:
            lease.running -= 1

    async def _set(self, namespace: str, lease: _Lease, target: int) -> None:
        """Ask for a lease of ``target`` slots (caller holds ``lease.lock``)."""
        asked = self._clock()
        self.requests += 1
        lease.leased = await self.ledger.lease_slots(namespace, self.holder, target, self.cap, self.ttl)
        lease.until = asked + self.ttl

    def leased(self, namespace: str) -> int:
        lease = self._leases.get(namespace)
        return lease.leased if lease is not None and self._clock() < lease.until else 0

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.maintain()
            except Exception as exc:  # noqa: BLE001 - next tick tries again; a lapsed lease is only refused
                LOG.warning("fleet caps: renewing or returning invocation slots failed (%s)", type(exc).__name__)

    async def maintain(self) -> None:
        """One tick: give back slots unused since the last tick, renew leases a third of the way from their
        end, forget namespaces with nothing leased or running."""
        now = self._clock()
        due: list[str] = []
        for namespace, lease in list(self._leases.items()):
            keep = max(lease.running, lease.peak)
            lease.peak = lease.running
            if lease.leased > keep and not lease.lock.locked():
                async with lease.lock:
                    # Shrink here first: an invocation starting while the return is on its way must not
                    # take a slot the ledger is about to hand to another gateway.
                    lease.leased = keep
                    await self._set(namespace, lease, keep)  # also renews what it keeps
            elif lease.leased > 0 and lease.until - now < self.ttl * 2 / 3:
                due.append(namespace)
            if lease.leased == 0 and lease.running == 0 and not lease.lock.locked():
                del self._leases[namespace]
        if due:
            asked = self._clock()
            self.requests += 1
            held = await self.ledger.renew_slots(self.holder, due, self.ttl)
            for namespace in due:
                renewed = self._leases.get(namespace)
                if renewed is not None and not renewed.lock.locked():
                    renewed.leased = held.get(namespace, 0)  # a lapsed lease is not revived: ask again
                    renewed.until = asked + self.ttl

    async def aclose(self) -> None:
        """Stop the maintenance and give every lease back (best effort: otherwise they lapse)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        held = list(self._leases)  # with any whose change was cut short: the ledger may hold a lease for it
        self._leases.clear()
        if held:
            try:
                await self.ledger.release_slots(self.holder, held)
            except Exception as exc:  # noqa: BLE001 - stopping: the leases lapse by themselves
                LOG.warning("fleet caps: could not give back invocation slots (%s)", type(exc).__name__)
