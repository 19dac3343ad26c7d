"""Durable delivery: a send is committed before anyone is told it was accepted, and retried until its TTL.

`DeliveryQueue.accept` commits the send and one delivery row per target device in one transaction
(`store.queue`); `DeliveryQueue.deliver` then — the fast path — delivers at once in this process under its
own lease, within the caller's deadline, and writes each device's state (`send` is both). What is not
finished (a transient failure, the deadline) stays ``queued``; `DeliveryQueue`'s worker claims due rows
under a lease and retries them with backoff (honouring ``Retry-After``) until the message's
``ttl_seconds``, then marks them ``expired``.
A process that dies mid-delivery leaves its rows ``sending`` under a lease that expires; any worker (this
process after a restart, or another gateway on the same database) then takes them over. A success a service
confirms later (an Expo ticket) leaves the row ``sent`` with its receipt id; workers read the receipt when it
is due (`push.receipts`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..store.base import Device, NotFound, StoreError
from ..store.changes import Change, HasChangeFeed
from ..store.queue import (
    AcceptedSend,
    ClaimedDelivery,
    ClaimedReceipt,
    DeliveryUpdate,
    IdempotencyConflict,
    SendStatus,
    Target,
)
from .backoff import backoff
from .collapse import with_send_key
from .dispatcher import DEFAULT_SEND_TIMEOUT, Dispatcher
from .errors import PushError, PushUnavailable, QueueFull, SendConflict
from .message import MAX_TTL_SECONDS, MessageError, PushMessage, parse_message
from .receipts import receipt_updates, unread
from .report import DeviceResult, SendReport

__all__ = ["DeliveryQueue", "PendingSend", "QueueSettings", "QueueStore", "report_from_status"]

LOG = logging.getLogger("wasmhost.push.delivery")

#: Longest a delivery's recorded state waits for its group commit.
FLUSH_DELAY = 0.01


@dataclass(frozen=True)
class QueueSettings:
    #: A message without ``ttl_seconds`` is retried for this long.
    default_ttl: float = 3600.0
    #: Deliveries a namespace may have queued or in flight at once; a send beyond it is refused.
    max_queued: int = 100_000
    #: How long a worker's claim lasts; a crashed holder's rows are taken over after it.
    lease_seconds: float = 60.0
    #: Deliveries one worker claims per query, and holds in flight at most.
    batch: int = 200
    #: How often an idle worker looks for due deliveries (it is also woken by this process's sends).
    poll_interval: float = 1.0
    #: Backoff between attempts of a transient failure: doubling from `retry_base`, at most `retry_max`.
    retry_base: float = 1.0
    retry_max: float = 600.0
    #: How long one worker attempt may take.
    attempt_timeout: float = DEFAULT_SEND_TIMEOUT
    #: Sends whose deliveries have all ended are deleted this many seconds after they were accepted.
    retention: float = 7 * 24 * 3600.0
    #: Receipts (Expo): first read this long after the ticket (Expo advises ~15 min), then every
    #: `receipt_retry` while not ready, until `receipt_window` after the ticket (Expo keeps them 24 h).
    receipt_delay: float = 15 * 60.0
    receipt_retry: float = 5 * 60.0
    receipt_window: float = 24 * 3600.0

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        return backoff(attempts, retry_after, self.retry_base, self.retry_max)


#: Longest a namespace's count of queued deliveries is reused while it is far below `max_queued`.
QUEUED_RECOUNT = 1.0
#: Seconds between a worker's prunings of finished sends past their retention.
PRUNE_EVERY = 600.0
#: Seconds between a worker's readings of the queue's depth and oldest entry (for /metrics).
STATS_EVERY = 5.0
#: Claimed sends of one namespace a worker delivers at once (`DeliveryQueue._enqueue`): as many as APNs
#: multiplexes on its connection (`providers.apns.APNS_CONCURRENCY`); more would only wait for a stream.
LANES_PER_NAMESPACE = 32
#: Namespaces whose count is kept between sends.
QUEUED_COUNTS_KEPT = 10_000
#: Longest an idle worker goes between looks for due receipts (receipts wait minutes anyway: an idle
#: worker's every poll need not be a second transaction); shorter when `receipt_retry` is.
RECEIPTS_EVERY = 10.0


class QueueStore(Protocol):
    async def accept_send(
        self, namespace: str, user_id: str, message: dict[str, Any], targets: Sequence[Target], *,
        ttl_seconds: float, idempotency_key: str = "", lease_owner: str = "", lease_seconds: float = 0.0,
        delivered: Collection[str] = frozenset(), also: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
    ) -> AcceptedSend: ...
    async def deliver_in_store(self, owner: str, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]],
                               updates: Sequence[DeliveryUpdate]) -> None: ...
    async def update_deliveries(self, owner: str, updates: Sequence[DeliveryUpdate], *, events: bool = False
                                ) -> None: ...
    async def claim_deliveries(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedDelivery]: ...
    async def claim_receipts(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedReceipt]: ...
    async def release_leases(self, owner: str) -> int: ...
    async def get_send(self, namespace: str, send_id: str) -> SendStatus: ...
    async def queued_in_namespace(self, namespace: str) -> int: ...
    async def devices_by_row_ids(self, namespace: str, row_ids: Sequence[str]) -> list[Device]: ...
    async def prune_sends(self, older_than: float) -> int: ...
    async def queue_stats(self) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class PendingSend:
    """What `DeliveryQueue.accept` committed and left for `DeliveryQueue.deliver`: the devices to send to
    now (`remote`; `local` ones were delivered by the commit), their delivery row ids, and the deadline."""

    dispatcher: Dispatcher
    namespace: str
    send_id: str
    message: PushMessage
    devices: list[Device]
    remote: list[Device]
    local: dict[str, DeviceResult]
    ids: dict[str, str]
    deadline: float
    expires_at: float


class _Lanes:
    """One namespace's claimed sends waiting for a lane (with when they were claimed), and its lanes:
    at most `LANES_PER_NAMESPACE` (`DeliveryQueue._enqueue`)."""

    __slots__ = ("backlog", "tasks")

    def __init__(self) -> None:
        self.backlog: deque[tuple[list[ClaimedDelivery], list[Device] | None, float]] = deque()
        self.tasks: set[asyncio.Task[None]] = set()


class DispatcherSource(Protocol):
    def held(self, namespace: str) -> AbstractAsyncContextManager[Dispatcher]:
        """The namespace's dispatcher, its providers kept open until the block ends."""
        ...


def report_from_status(status: SendStatus) -> SendReport:
    """An earlier send's report, from what the store knows now (an idempotent repeat)."""
    results = [DeviceResult(d.device_id, d.provider, d.state in ("delivered", "sent"), d.status, d.reason, d.error,
                            d.state == "dead", d.attempts, d.state) for d in status.deliveries]
    return SendReport(results, send_id=status.id)


def _take_in_store(dispatcher: Dispatcher, namespace: str, group: list[ClaimedDelivery], present: list[Device],
                   steps: list[tuple[str, Sequence[Sequence[Any]]]], updates: list[DeliveryUpdate],
                   ) -> dict[str, DeviceResult]:
    """Add to `steps` and `updates` what delivers one claimed send's in-store devices (`present`: its
    devices still registered); their results by device row id. Empty when none of them is in-store (the
    message is then left for `_deliver` to parse, once) or the stored message no longer parses."""
    if not any(dispatcher.delivers_in_store(d.provider) for d in present):
        return {}
    try:
        message = parse_message(group[0].message_json)
    except MessageError:
        return {}
    send_steps, local = dispatcher.in_store(namespace, present, message)
    steps.extend(send_steps)
    updates.extend(DeliveryUpdate(c.id, "delivered", 1, 200) for c in group if c.device_row_id in local)
    return local


class DeliveryQueue:
    """The durable send path and this process's delivery worker."""

    def __init__(self, store: QueueStore, dispatchers: DispatcherSource, settings: QueueSettings | None = None,
                 *, owner: str = "") -> None:
        self.store = store
        self.dispatchers = dispatchers
        self.settings = settings or QueueSettings()
        #: This process's name on leases: unique per start, so a restarted process never mistakes an
        #: old lease for its own.
        self.owner = owner or uuid.uuid4().hex
        self.transitions: dict[str, int] = defaultdict(int)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        #: Per namespace with claimed sends not yet delivered: those sends and the lanes delivering them.
        self._lanes: dict[str, _Lanes] = {}
        #: Claimed deliveries in the backlog or being delivered (what the worker's `batch` bounds: rows, not
        #: sends, so a user's many devices count as many).
        self._claimed = 0
        #: namespace -> (deliveries queued or in flight as last counted, plus those accepted here since;
        #: monotonic time of the count)
        self._queued_counts: dict[str, tuple[int, float]] = {}
        self._pending: list[DeliveryUpdate] = []
        #: Namespaces of the pending updates (those with a webhook make their flush write webhook events).
        self._pending_namespaces: set[str] = set()
        #: Namespaces with an enabled webhook, and who to wake when events were written (`push.webhooks`).
        self.webhook_namespaces: frozenset[str] = frozenset()
        self.on_events: Callable[[], None] | None = None
        #: Deliveries queued or in flight (every gateway) and the acceptance time of the oldest, as the
        #: worker last read them.
        self.depth = 0
        self.oldest_at = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- accepting -------------------------------------------------------------------------------

    async def send(
        self, dispatcher: Dispatcher, namespace: str, user_id: str, message: PushMessage, *,
        deadline: float | None = None, idempotency_key: str = "", wait: bool = True,
    ) -> SendReport:
        """Accept durably, then (with `wait`) deliver at once within `deadline`; the report carries the
        send id and each device's state. Raises `SendConflict`, `QueueFull`, `PushUnavailable`."""
        accepted = await self.accept(dispatcher, namespace, user_id, message, deadline=deadline,
                                     idempotency_key=idempotency_key, wait=wait)
        return accepted if isinstance(accepted, SendReport) else await self.deliver(accepted)

    async def accept(
        self, dispatcher: Dispatcher, namespace: str, user_id: str, message: PushMessage, *,
        deadline: float | None = None, idempotency_key: str = "", wait: bool = True,
    ) -> SendReport | PendingSend:
        """Commit the send and its delivery rows: the report when that is all (an idempotent repeat, not
        `wait`, or every device delivered by the commit itself: the outbox), else what `deliver` finishes.
        Raises `SendConflict`, `QueueFull`, `PushUnavailable` (then nothing was stored)."""
        devices = await dispatcher.devices_for(namespace, user_id, message)
        settings = self.settings
        ttl = float(message.ttl_seconds if message.ttl_seconds is not None else settings.default_ttl)
        ttl = min(ttl, MAX_TTL_SECONDS)
        start = time.monotonic()
        deadline = deadline if deadline is not None else start + DEFAULT_SEND_TIMEOUT
        # Devices whose delivery is a write to this store (the outbox) are delivered by the accept's own
        # transaction: one commit for the send, its rows and those deliveries, which then happen exactly once.
        # In a namespace with a webhook their `delivered` state still goes through the group commit, which
        # writes the webhook events (`send.completed`): a crash before it repeats such a delivery.
        in_store, local = dispatcher.in_store(namespace, devices, message) if wait else ([], {})
        remote = [d for d in devices if d.id not in local] if local else devices
        final_at_accept = local if namespace not in self.webhook_namespaces else {}
        try:
            if remote and settings.max_queued and (
                await self._queued(namespace) + len(remote) > settings.max_queued
            ):
                raise QueueFull(f"namespace has {settings.max_queued} deliveries queued (max_queued)")
            accepted = await self.store.accept_send(
                namespace, user_id, message.to_dict(),
                [Target(d.id, d.device_id, d.provider) for d in devices],
                ttl_seconds=ttl, idempotency_key=idempotency_key or message.message_id,
                lease_owner=self.owner if wait else "",
                lease_seconds=max(0.0, deadline - start) + settings.lease_seconds,
                delivered=final_at_accept.keys(), also=in_store,
            )
            if not accepted.created:
                await self.flush()
                return report_from_status(await self.store.get_send(namespace, accepted.send_id))
        except IdempotencyConflict as exc:
            raise SendConflict(str(exc)) from None
        except (StoreError, NotFound) as exc:
            LOG.error("push: accepting a send in namespace %s failed: %s", namespace, exc)
            raise PushUnavailable("the send could not be stored") from None
        self._count("queued" if not wait else "sending", len(devices) - len(final_at_accept))
        if final_at_accept:
            self._count("delivered", len(final_at_accept))
        if local:
            dispatcher.committed_in_store(namespace, local.values())
        if (known := self._queued_counts.get(namespace)) is not None:
            self._queued_counts[namespace] = (known[0] + len(remote), known[1])
        if not wait:
            self.wake()
            return SendReport([DeviceResult(d.device_id, d.provider, False, state="queued") for d in devices],
                              send_id=accepted.send_id)
        ids = accepted.delivery_ids
        if local and not final_at_accept:
            self._record([DeliveryUpdate(ids[row], "delivered", 1, 200) for row in local], namespace)
        if not remote:  # all delivered in the accept: nothing left to send
            return SendReport([local[d.id] for d in devices], send_id=accepted.send_id)
        # The same key as any later retry of this send (which reads the stored key and send id back).
        message = with_send_key(message, namespace, idempotency_key or message.message_id, accepted.send_id)
        return PendingSend(dispatcher, namespace, accepted.send_id, message, devices, remote, local, ids,
                           deadline, time.time() + ttl)

    async def deliver(self, pending: PendingSend) -> SendReport:
        """Deliver what `accept` left, within its deadline, and record each device's state."""
        p = pending
        try:
            report = await p.dispatcher.send_to_devices(p.namespace, p.remote, p.message, deadline=p.deadline,
                                                        durable=True)
        except asyncio.CancelledError:
            # Put them back for a worker now rather than when the lease runs out.
            self._spawn(self.store.update_deliveries(self.owner, [
                DeliveryUpdate(p.ids[d.id], "queued", 0, next_attempt_at=time.time()) for d in p.remote]))
            raise
        updates = [self._update(p.ids[d.id], r, 0, p.expires_at) for d, r in zip(p.remote, report.results, strict=True)]
        self._record(updates, p.namespace)
        if p.local:
            by_row = dict(zip((d.id for d in p.remote), report.results, strict=True))
            report = SendReport([p.local.get(d.id) or by_row[d.id] for d in p.devices])
        report.send_id = p.send_id
        return report

    async def _queued(self, namespace: str) -> int:
        """Deliveries the namespace has queued or in flight, for `max_queued`. Far below the cap (under
        half of it) a count read less than `QUEUED_RECOUNT` seconds ago is used, plus what this process
        accepted since: the cap can then be overshot only by what every other process accepts within
        that time, and it spares the send path a read."""
        now = time.monotonic()
        known = self._queued_counts.get(namespace)
        if known is not None and now - known[1] < QUEUED_RECOUNT and known[0] * 2 < self.settings.max_queued:
            return known[0]
        count = await self.store.queued_in_namespace(namespace)
        if len(self._queued_counts) >= QUEUED_COUNTS_KEPT:
            self._queued_counts.clear()
        self._queued_counts[namespace] = (count, now)
        return count

    def _update(self, delivery_id: str, result: DeviceResult, attempts_before: int, expires_at: float
                ) -> DeliveryUpdate:
        attempts = result.attempts
        state = result.state or ("delivered" if result.success else "failed")
        next_at = receipt_at = 0.0
        if state == "queued":
            next_at = time.time() + self.settings.backoff(attempts_before + attempts, result.retry_after)
            if next_at >= expires_at:
                state = "expired"
        elif state == "delivered" and result.receipt_id:  # the service confirms it later: read the receipt then
            state, receipt_at = "sent", time.time()
            next_at = receipt_at + self.settings.receipt_delay
        result.state = state
        return DeliveryUpdate(delivery_id, state, attempts, result.status, result.reason, result.message, next_at,
                              result.receipt_id if state == "sent" else "", receipt_at)

    def _record(self, updates: list[DeliveryUpdate], namespace: str) -> None:
        """Queue the states for the next group commit (within `FLUSH_DELAY`): many sends' results share
        one transaction. Until it commits the rows keep their ``sending`` lease, so a crash in between
        costs a repeated delivery of those rows after the lease, never a lost one."""
        self._pending.extend(updates)
        self._pending_namespaces.add(namespace)
        if self._flush_handle is None and self._flushing is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        self._flushing = asyncio.ensure_future(self._flush_pending())

    async def flush(self) -> None:
        """Commit every recorded state now (readers of the store call this first, to see their own sends)."""
        while self._pending or self._flushing is not None:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            if self._flushing is None:
                self._flushing = asyncio.ensure_future(self._flush_pending())
            await asyncio.shield(self._flushing)

    async def _flush_pending(self) -> None:
        try:
            while self._pending:
                updates, self._pending = self._pending, []
                namespaces, self._pending_namespaces = self._pending_namespaces, set()
                events = not namespaces.isdisjoint(self.webhook_namespaces)
                try:
                    await self.store.update_deliveries(self.owner, updates, events=events)
                except StoreError as exc:
                    # The rows keep our lease; when it runs out a worker retries them (a duplicate at worst).
                    LOG.error("push: recording %d delivery states failed: %s", len(updates), exc)
                    continue
                for u in updates:
                    self._count(u.state)
                if any(u.state == "queued" for u in updates):
                    self.wake()
                if events and self.on_events is not None:
                    self.on_events()
        finally:
            self._flushing = None

    def _count(self, state: str, n: int = 1) -> None:
        self.transitions[state] += n

    def set_webhook_namespaces(self, namespaces: frozenset[str]) -> None:
        self.webhook_namespaces = namespaces

    # -- the worker ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wasmhost-delivery-worker")
            if isinstance(self.store, HasChangeFeed):  # every gateway (NOTIFY) or process (SQLite ring)
                self._unsubscribe = self.store.changes.subscribe(self._on_change)

    def wake(self) -> None:
        self._wake.set()

    def _on_change(self, change: Change) -> None:
        """Deliveries became due somewhere (a send accepted for the workers, leases put back), or the feed
        may have missed some: look now rather than at the next poll."""
        if change.kind == "deliveries" or change.is_everything:
            self._wake.set()

    async def aclose(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for t in list(self._in_flight):
            t.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self.flush()
        try:
            await self.store.release_leases(self.owner)
        except StoreError as exc:
            LOG.warning("push: could not release delivery leases on close: %s", exc)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._done)
        return task

    def _enqueue(self, group: list[ClaimedDelivery], devices: list[Device] | None) -> None:
        """Deliver one claimed send soon: in one of its namespace's lanes, each a task that delivers the
        namespace's backlog one send after another. A task per send would park most of a large claim on
        a provider's streams (`providers.apns.APNS_CONCURRENCY`), each holding its whole stack of frames
        and futures for the garbage collector to walk again and again; waiting as rows, they cost
        nothing. Lanes are per namespace, so one tenant's slow provider holds only its own."""
        namespace = group[0].namespace
        lanes = self._lanes.get(namespace)
        if lanes is None:
            lanes = self._lanes[namespace] = _Lanes()
        lanes.backlog.append((group, devices, time.monotonic()))
        self._claimed += len(group)
        if len(lanes.tasks) < LANES_PER_NAMESPACE:
            lanes.tasks.add(self._spawn(self._lane(namespace, lanes)))

    async def _lane(self, namespace: str, lanes: _Lanes) -> None:
        backlog = lanes.backlog
        try:
            while backlog:
                group, devices, claimed_at = backlog.popleft()
                try:
                    if time.monotonic() - claimed_at < self.settings.attempt_timeout:
                        await self._deliver(group, devices)
                    else:
                        # It waited as long as an attempt may take (a slow provider): give it back now, as
                        # a task per send would have timed out waiting for a stream, rather than hold its
                        # lease (a takeover would deliver it twice) and the worker's room any longer.
                        self._record([DeliveryUpdate(c.id, "queued", 0, next_attempt_at=time.time()
                                                     + self.settings.retry_base) for c in group], namespace)
                except Exception as exc:  # `_deliver` records every outcome; this is only a guard
                    LOG.error("push: delivering a claimed send failed: %s", type(exc).__name__)
                finally:
                    self._claimed -= len(group)
                    self._wake.set()  # room to claim more
        finally:
            # Decided here, with no await since the backlog was last seen empty: a send enqueued from now
            # on finds a lane, or starts one.
            lanes.tasks.difference_update((asyncio.current_task(),))
            if not lanes.tasks:
                del self._lanes[namespace]
                # Left by cancelled lanes (closing): they keep their lease.
                self._claimed -= sum(len(g) for g, _, _ in backlog)

    async def _deliver_claimed(self, groups: list[tuple[list[ClaimedDelivery], list[Device] | None]]) -> None:
        """Enqueue `groups` and wait until every lane is idle (tests and benchmarks drive the worker so)."""
        for group, devices in groups:
            self._enqueue(group, devices)
        while self._lanes:
            await asyncio.wait([t for lanes in self._lanes.values() for t in lanes.tasks])

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("push: delivery task failed: %s", type(task.exception()).__name__)
        self._wake.set()

    async def read_stats(self) -> None:
        try:
            stats = await self.store.queue_stats()
        except StoreError as exc:
            LOG.warning("push: reading the queue's depth failed: %s", exc)
            return
        self.depth = int(stats["depth"])
        self.oldest_at = time.time() - stats["oldest_age"] if self.depth else 0.0

    async def prune(self) -> int:
        """Delete finished sends older than the retention period (every gateway's worker does this
        now and then; deleting what another already deleted is harmless)."""
        try:
            return await self.store.prune_sends(time.time() - self.settings.retention)
        except StoreError as exc:
            LOG.warning("push: pruning old sends failed: %s", exc)
            return 0

    async def _run(self) -> None:
        settings = self.settings
        next_prune = next_stats = next_receipts = time.monotonic()
        while True:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                await self.prune()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + STATS_EVERY
                await self.read_stats()
            if time.monotonic() >= next_receipts:
                next_receipts = time.monotonic() + max(settings.poll_interval,
                                                       min(settings.receipt_retry, RECEIPTS_EVERY))
                for receipts in await self._claim_receipts():
                    self._spawn(self._read_receipts(receipts))
            room = settings.batch - self._claimed
            claimed: list[ClaimedDelivery] = []
            if room > 0:
                try:
                    claimed = await self.store.claim_deliveries(self.owner, settings.lease_seconds, room)
                except StoreError as exc:
                    LOG.warning("push: claiming deliveries failed: %s", exc)
            if claimed:
                for group, devices in await self._deliver_in_store(claimed):
                    self._enqueue(group, devices)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), settings.poll_interval)
            except TimeoutError:
                pass

    async def claim_once(self) -> int:
        """Claim and deliver one batch, awaiting it (tests and benchmarks drive the worker with this)."""
        claimed = await self.store.claim_deliveries(self.owner, self.settings.lease_seconds, self.settings.batch)
        await self._deliver_claimed(await self._deliver_in_store(claimed))
        await self.flush()
        return len(claimed)

    async def _deliver_in_store(
        self, claimed: list[ClaimedDelivery]
    ) -> list[tuple[list[ClaimedDelivery], list[Device] | None]]:
        """Deliver the claimed rows whose provider writes to the store (the outbox) in one commit for the
        whole batch — every record with its ``delivered`` state, so each happens exactly once — and return
        the rest, one group per send with its devices when they were read here, for `_deliver`. Namespaces
        with a webhook take `_deliver` (their states' commit writes the events), and so does anything
        unusual (expired, a bad message, a device gone, the provider not configured): there the per-send
        path says what happened."""
        now = time.time()
        sends: dict[str, list[ClaimedDelivery]] = defaultdict(list)
        for c in claimed:
            sends[c.send_id].append(c)
        by_namespace: dict[str, list[list[ClaimedDelivery]]] = defaultdict(list)
        rest: list[tuple[list[ClaimedDelivery], list[Device] | None]] = []
        for group in sends.values():
            ns = group[0].namespace
            if ns in self.webhook_namespaces or group[0].expires_at <= now:
                rest.append((group, None))
            else:
                by_namespace[ns].append(group)
        steps: list[tuple[str, Sequence[Sequence[Any]]]] = []
        updates: list[DeliveryUpdate] = []
        done: list[tuple[Dispatcher, str, list[DeviceResult]]] = []
        for ns, groups in by_namespace.items():
            try:
                async with self.dispatchers.held(ns) as dispatcher:
                    rows = [c.device_row_id for g in groups for c in g]
                    devices = {d.id: d for d in await self.store.devices_by_row_ids(ns, rows)}
                    for group in groups:
                        present = [devices[c.device_row_id] for c in group if c.device_row_id in devices]
                        local = _take_in_store(dispatcher, ns, group, present, steps, updates)
                        left = [c for c in group if c.device_row_id not in local]
                        if left:
                            rest.append((left, present))
                        if local:
                            done.append((dispatcher, ns, list(local.values())))
            except (PushError, StoreError):
                rest.extend((group, None) for group in groups)  # `_deliver` retries them, and records why
        if updates:
            try:
                await self.store.deliver_in_store(self.owner, steps, updates)
            except StoreError as exc:
                # The rows keep their lease; when it runs out a worker delivers them (nothing was written).
                LOG.error("push: recording %d outbox deliveries failed: %s", len(updates), exc)
                return rest
            self._count("delivered", len(updates))
            for dispatcher, ns, results in done:
                dispatcher.committed_in_store(ns, results)
        return rest

    # -- receipts (see push.receipts) ----------------------------------------------------------------

    async def _claim_receipts(self) -> list[list[ClaimedReceipt]]:
        """Due receipts, leased to this worker, one group per (namespace, provider)."""
        try:
            claimed = await self.store.claim_receipts(self.owner, self.settings.lease_seconds, self.settings.batch)
        except StoreError as exc:
            LOG.warning("push: claiming receipts failed: %s", exc)
            return []
        groups: dict[tuple[str, str], list[ClaimedReceipt]] = defaultdict(list)
        for c in claimed:
            groups[(c.namespace, c.provider)].append(c)
        return list(groups.values())

    async def _read_receipts(self, group: list[ClaimedReceipt]) -> None:
        settings = self.settings
        try:
            async with self.dispatchers.held(group[0].namespace) as dispatcher:
                updates = await receipt_updates(
                    dispatcher, group, retry=settings.receipt_retry, window=settings.receipt_window,
                    requeue=lambda c, r: self._update(c.id, r, c.attempts, c.expires_at))
        except (PushError, StoreError) as exc:
            LOG.warning("push: reading receipts in namespace %s failed: %s", group[0].namespace, exc)
            updates = unread(group, settings.receipt_retry, settings.receipt_window)
        self._record(updates, group[0].namespace)

    async def receipts_once(self) -> int:
        """Claim and read one batch of due receipts, awaiting it (tests drive the worker with this)."""
        groups = await self._claim_receipts()
        await asyncio.gather(*(self._read_receipts(g) for g in groups))
        await self.flush()
        return sum(len(g) for g in groups)

    async def _deliver(self, group: list[ClaimedDelivery], devices: list[Device] | None = None) -> None:
        """Deliver one send's claimed rows (one namespace, one message); `devices`, when given, are theirs
        as just read (`_deliver_in_store` reads a whole batch's at once)."""
        first = group[0]
        now = time.time()
        if first.expires_at <= now:
            self._record([DeliveryUpdate(c.id, "expired", 0, reason="Expired",
                                               error="the message's ttl_seconds passed before it was delivered")
                                for c in group], first.namespace)
            return
        try:
            message = with_send_key(parse_message(first.message_json), first.namespace, first.idempotency_key,
                                    first.send_id)
        except MessageError as exc:
            self._record([DeliveryUpdate(c.id, "failed", 0, reason="BadMessage", error=str(exc))
                                for c in group], first.namespace)
            return
        try:
            async with self.dispatchers.held(first.namespace) as dispatcher:
                if devices is None:
                    devices = await self.store.devices_by_row_ids(first.namespace, [c.device_row_id for c in group])
                updates = await self._attempt(dispatcher, group, devices, message, now)
        except (PushError, StoreError) as exc:
            # Not configured (yet), or the store is down: try again later, until the TTL.
            updates = [self._update(c.id, DeviceResult(c.device_id, c.provider, False, reason="Unavailable",
                                                       message=str(exc), state="queued"), c.attempts, c.expires_at)
                       for c in group]
        self._record(updates, first.namespace)

    async def _attempt(self, dispatcher: Dispatcher, group: list[ClaimedDelivery], devices: list[Device],
                       message: PushMessage, now: float) -> list[DeliveryUpdate]:
        first = group[0]
        by_row = {d.id: d for d in devices}
        updates = []
        present = [c for c in group if c.device_row_id in by_row]
        for c in group:
            if c.device_row_id not in by_row:
                updates.append(DeliveryUpdate(c.id, "failed", 0, reason="DeviceRemoved",
                                              error="the device was removed before the message reached it"))
        if present:
            deadline = time.monotonic() + min(self.settings.attempt_timeout, first.expires_at - now)
            report = await dispatcher.send_to_devices(
                first.namespace, [by_row[c.device_row_id] for c in present], message, deadline=deadline, durable=True
            )
            updates += [self._update(c.id, r, c.attempts, c.expires_at)
                        for c, r in zip(present, report.results, strict=True)]
        return updates
