"""The durable delivery queue's statements: sends, their per-device deliveries, claims and leases.

A send is accepted by committing its row and one delivery row per target device in one transaction.
A delivery is then in exactly one state (`STATES`). A push service that confirms delivery later (Expo's
receipts) leaves it ``sent`` with the receipt's id until a worker reads the receipt (`claim_receipts`).
Whoever delivers holds a lease (`lease_owner`, `lease_until`): the accepting process leases the rows it
delivers at once, workers lease what they claim, and a lease that expires (its holder crashed) makes the
row claimable again. Every state change after a claim names the lease owner, so a holder whose lease was
taken over cannot overwrite the new holder's result. Timestamps are wall-clock seconds: they outlive the
process.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import NotFound, StoreError
from .changes import Change
from .driver import Driver, IntegrityError, Row, Tx

__all__ = [
    "FINAL_STATES",
    "STATES",
    "AcceptedSend",
    "ClaimedDelivery",
    "ClaimedReceipt",
    "DeliveryStatus",
    "DeliveryUpdate",
    "IdempotencyConflict",
    "QueueStatements",
    "SendStatus",
    "Target",
]

STATES = ("queued", "sending", "sent", "delivered", "failed", "dead", "expired")
FINAL_STATES = frozenset({"delivered", "failed", "dead", "expired"})
#: How long an idempotency key names its first send.
IDEMPOTENCY_WINDOW = 24 * 3600.0

_SEND_COLUMNS = "id, namespace, user_id, message_json, created_at, expires_at"
_DELIVERY_COLUMNS = ("id, device_id, provider, state, attempts, next_attempt_at, status, reason, error, updated_at")
#: States a worker still acts on (for "pending" sends, and what pruning keeps): the condition of the
#: ``deliveries_unfinished`` index, which a reader repeats word for word (migration 8).
_UNFINISHED = "('queued', 'sending', 'sent')"
#: Queued or in flight: unfinished, less those the service has (``sent``, awaiting a receipt).
_QUEUED = f"state IN {_UNFINISHED} AND state <> 'sent'"
_UPDATE = (
    "UPDATE deliveries SET state = ?, attempts = attempts + ?, status = ?, reason = ?, error = ?,"
    " next_attempt_at = ?, receipt_id = ?, receipt_at = ?, lease_owner = '', lease_until = 0, updated_at = ?"
    " WHERE id = ? AND lease_owner = ?"
)


def _update_rows(owner: str, updates: Sequence[DeliveryUpdate]) -> list[tuple[Any, ...]]:
    """`_UPDATE`'s parameters for each update (texts cut to their column's bound)."""
    now = time.time()
    return [(u.state, u.attempts, u.status, u.reason[:200], u.error[:1000], u.next_attempt_at, u.receipt_id,
             u.receipt_at, now, u.id, owner) for u in updates]


class IdempotencyConflict(StoreError):
    """The idempotency key already names a different message in this namespace."""


@dataclass(frozen=True, slots=True)
class Target:
    device_row_id: str
    device_id: str
    provider: str


@dataclass(frozen=True, slots=True)
class AcceptedSend:
    send_id: str
    #: False when the idempotency key named an earlier send: nothing new was accepted.
    created: bool
    #: Delivery row ids by device row id, in target order (empty when not `created`).
    delivery_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    send_id: str
    namespace: str
    user_id: str
    device_row_id: str
    device_id: str
    provider: str
    attempts: int
    message_json: str
    expires_at: float
    #: The send's idempotency key ("" without one): with `send_id`, what its collapse key derives from.
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """A delivery's next state, written only if `owner` still holds its lease."""

    id: str
    state: str
    attempts: int = 1
    status: int = 0
    reason: str = ""
    error: str = ""
    next_attempt_at: float = 0.0
    #: With state ``sent``: the service's receipt id, and when its ticket came (wall clock).
    receipt_id: str = ""
    receipt_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimedReceipt:
    """A ``sent`` delivery whose receipt is due to be read, leased to the claimer."""

    id: str
    send_id: str
    namespace: str
    device_row_id: str
    device_id: str
    provider: str
    attempts: int
    receipt_id: str
    receipt_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    id: str
    device_id: str
    provider: str
    state: str
    attempts: int
    next_attempt_at: float
    status: int
    reason: str
    error: str
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]
        if self.state in FINAL_STATES:
            out["next_attempt_at"] = None
        return out


@dataclass(frozen=True, slots=True)
class SendStatus:
    id: str
    namespace: str
    user_id: str
    message: dict[str, Any]
    created_at: float
    expires_at: float
    deliveries: list[DeliveryStatus]

    @property
    def state(self) -> str:
        """``pending`` while any delivery may still be attempted, then ``completed``."""
        return "completed" if all(d.state in FINAL_STATES for d in self.deliveries) else "pending"

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for d in self.deliveries:
            out[d.state] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "send_id": self.id,
            "user_id": self.user_id,
            "state": self.state,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "counts": self.counts(),
            "deliveries": [d.to_dict() for d in self.deliveries],
        }


def message_hash(message_json: str) -> str:
    return hashlib.sha256(message_json.encode()).hexdigest()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class QueueStatements:
    """Mixed into `SQLStore`: the queue's statements over its driver."""

    driver: Driver

    async def update_with_events(self, tx: Tx, update_sql: str, rows: Sequence[Sequence[Any]],
                                 final_ids: Sequence[str]) -> None:
        raise NotImplementedError  # `webhooks.WebhookStatements`, mixed in beside this class

    async def accept_send(
        self,
        namespace: str,
        user_id: str,
        message: dict[str, Any],
        targets: Sequence[Target],
        *,
        ttl_seconds: float,
        idempotency_key: str = "",
        lease_owner: str = "",
        lease_seconds: float = 0.0,
        delivered: Collection[str] = frozenset(),
        also: Sequence[tuple[str, Sequence[Sequence[Any]]]] = (),
    ) -> AcceptedSend:
        """Commit the send and one delivery per target in one transaction. With `lease_owner`, the caller
        delivers at once: the rows start ``sending`` under its lease; otherwise ``queued``, due now.
        Targets whose device row id is in `delivered` were delivered by the statements in `also`, which
        commit in this same transaction (`push.provider.InStoreProvider`): their rows start ``delivered``.

        With an `idempotency_key` already used in this namespace within `IDEMPOTENCY_WINDOW`, nothing is
        written: the earlier send is returned (`created` False), or `IdempotencyConflict` raised if its
        message differs."""
        now = time.time()
        send_id = uuid.uuid4().hex
        text = json.dumps(message, ensure_ascii=False, sort_keys=True)
        digest = message_hash(text)
        ids = {t.device_row_id: f"{send_id}.{i}" for i, t in enumerate(targets)}
        state, until = ("sending", now + lease_seconds) if lease_owner else ("queued", 0.0)
        send_row = (send_id, namespace, user_id, text, idempotency_key or None, digest, now, now + ttl_seconds)
        rows = [(ids[t.device_row_id], send_id, namespace, t.device_row_id, t.device_id, t.provider, state, 0, 0, now,
                 lease_owner, until, now) if t.device_row_id not in delivered else
                (ids[t.device_row_id], send_id, namespace, t.device_row_id, t.device_id, t.provider, "delivered", 1,
                 200, now, "", 0.0, now) for t in targets]
        insert_send = (
            "INSERT INTO sends (id, namespace, user_id, message_json, idempotency_key, message_hash, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        insert_deliveries = (
            "INSERT INTO deliveries (id, send_id, namespace, device_row_id, device_id, provider, state, attempts,"
            " status, next_attempt_at, lease_owner, lease_until, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        # Rows queued for the workers (nobody delivers them at once): wake every gateway's idle worker.
        due = Change(namespace, "deliveries") if rows and not lease_owner else None
        try:
            if not idempotency_key:
                steps: list[tuple[str, Sequence[Sequence[Any]]]] = [(insert_send, [send_row])]
                if rows:
                    steps.append((insert_deliveries, rows))
                steps.extend(also)
                await self.driver.commit_now(steps, change=due)
                return AcceptedSend(send_id, True, ids)
            async with self.driver.transaction() as tx:
                # A key older than the window no longer names its send: free it for this one.
                await tx.execute(
                    "UPDATE sends SET idempotency_key = NULL WHERE namespace = ? AND idempotency_key = ?"
                    " AND created_at < ?", (namespace, idempotency_key, now - IDEMPOTENCY_WINDOW),
                )
                written = await tx.execute(insert_send + " ON CONFLICT (namespace, idempotency_key) DO NOTHING",
                                           send_row)
                if not written:
                    [(earlier, earlier_hash)] = await tx.fetch(
                        "SELECT id, message_hash FROM sends WHERE namespace = ? AND idempotency_key = ?",
                        (namespace, idempotency_key),
                    )
                    if earlier_hash != digest:
                        raise IdempotencyConflict("this idempotency key was used for a different message")
                    return AcceptedSend(str(earlier), False)
                for row in rows:
                    await tx.execute(insert_deliveries, row)
                for sql, params in also:
                    for values in params:
                        await tx.execute(sql, values)
                if due is not None:
                    tx.announce(due)
            return AcceptedSend(send_id, True, ids)
        except IntegrityError as exc:
            if exc.kind == "foreign_key":
                raise NotFound(f"namespace {namespace!r} not found") from None
            raise

    async def update_deliveries(self, owner: str, updates: Sequence[DeliveryUpdate], *, events: bool = False) -> None:
        """Write each delivery's next state in one transaction, where `owner` still holds its lease.

        With `events` (some namespace concerned has a webhook), the webhook events these states cause are
        written in the same transaction (`webhooks.WebhookStatements.update_with_events`)."""
        if not updates:
            return
        rows = _update_rows(owner, updates)
        final = [u.id for u in updates if u.state in FINAL_STATES]
        if events and final:
            async with self.driver.transaction() as tx:
                await self.update_with_events(tx, _UPDATE, rows, final)
            return
        # Unflushed: an outcome lost in a database crash leaves the row leased, and its lease's expiry
        # retries it (a duplicate at worst); the accept, which the sender was told about, is flushed.
        await self.driver.commit_now([(_UPDATE, rows)], flush=False)

    async def deliver_in_store(self, owner: str, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]],
                               updates: Sequence[DeliveryUpdate]) -> None:
        """Commit the statements that deliver some claimed rows (`push.provider.InStoreProvider`) with those
        rows' states, in one transaction: a delivery and its state are written together or not at all.
        A row whose lease `owner` no longer holds keeps its state (its new holder delivers it too)."""
        rows = _update_rows(owner, updates)
        await self.driver.commit_now([*steps, (_UPDATE, rows)], flush=False)

    async def claim_deliveries(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedDelivery]:
        """Lease up to `limit` deliveries that are due (queued and due, or sending under an expired lease)."""
        now = time.time()
        async with self.driver.transaction() as tx:
            due = await tx.fetch(
                "SELECT id FROM deliveries WHERE state = 'queued' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT ?" + tx.skip_locked, (now, limit),
            )
            if len(due) < limit:
                due += await tx.fetch(
                    "SELECT id FROM deliveries WHERE state = 'sending' AND lease_until < ?"
                    " ORDER BY lease_until LIMIT ?" + tx.skip_locked, (now, limit - len(due)),
                )
            ids = [r[0] for r in due]
            if not ids:
                return []
            await tx.execute(
                f"UPDATE deliveries SET state = 'sending', lease_owner = ?, lease_until = ?, updated_at = ?"
                f" WHERE id IN ({_marks(len(ids))})", (owner, now + lease_seconds, now, *ids),
            )
            rows = await tx.fetch(
                "SELECT d.id, d.send_id, d.namespace, s.user_id, d.device_row_id, d.device_id, d.provider,"
                " d.attempts, s.message_json, s.expires_at, s.idempotency_key FROM deliveries d"
                f" JOIN sends s ON s.id = d.send_id WHERE d.id IN ({_marks(len(ids))}) ORDER BY d.id", ids,
            )
        # A key is freed (set NULL) only when a new send takes it over after `IDEMPOTENCY_WINDOW`; a retry
        # of the old send then derives its collapse key from its send id instead.
        return [ClaimedDelivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10] or "")
                for r in rows]

    async def claim_receipts(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedReceipt]:
        """Lease up to `limit` ``sent`` deliveries whose receipt is due. The lease is the row's
        `next_attempt_at` moved `lease_seconds` ahead: a holder that dies leaves it due again then, for any
        worker (the receipt id is on the row, so nothing of it lives only in a process)."""
        now = time.time()
        async with self.driver.transaction() as tx:
            due = await tx.fetch(
                "SELECT id FROM deliveries WHERE state = 'sent' AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT ?" + tx.skip_locked, (now, limit),
            )
            ids = [r[0] for r in due]
            if not ids:
                return []
            await tx.execute(
                f"UPDATE deliveries SET lease_owner = ?, lease_until = ?, next_attempt_at = ?"
                f" WHERE id IN ({_marks(len(ids))})", (owner, now + lease_seconds, now + lease_seconds, *ids),
            )
            rows = await tx.fetch(
                "SELECT d.id, d.send_id, d.namespace, d.device_row_id, d.device_id, d.provider, d.attempts,"
                " d.receipt_id, d.receipt_at, s.expires_at FROM deliveries d JOIN sends s ON s.id = d.send_id"
                f" WHERE d.id IN ({_marks(len(ids))}) ORDER BY d.id", ids,
            )
        return [ClaimedReceipt(*r) for r in rows]

    async def release_leases(self, owner: str) -> int:
        """Put back what `owner` still holds (it is stopping), due now."""
        now = time.time()
        released = await self.driver.execute(
            "UPDATE deliveries SET state = 'queued', lease_owner = '', lease_until = 0, next_attempt_at = ?"
            " WHERE state = 'sending' AND lease_owner = ?", (now, owner), change=Change("", "deliveries"),
        )
        return released + await self.driver.execute(
            "UPDATE deliveries SET lease_owner = '', lease_until = 0, next_attempt_at = ?"
            " WHERE state = 'sent' AND lease_owner = ?", (now, owner),
        )

    async def get_send(self, namespace: str, send_id: str) -> SendStatus:
        rows = await self.driver.fetch(f"SELECT {_SEND_COLUMNS} FROM sends WHERE id = ? AND namespace = ?",
                                       (send_id, namespace))
        if not rows:
            raise NotFound("send not found")
        return (await self._statuses(rows))[0]

    async def list_sends(self, namespace: str, *, user_id: str = "", state: str = "", limit: int = 50,
                         before: tuple[float, str] | None = None) -> list[SendStatus]:
        """Newest first; `before` is the (created_at, id) of the last send of the previous page."""
        where: list[str] = ["namespace = ?"]
        args: list[Any] = [namespace]
        if user_id:
            where.append("user_id = ?")
            args.append(user_id)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend((before[0], before[0], before[1]))
        if state in ("pending", "completed"):
            unfinished = f"SELECT send_id FROM deliveries WHERE namespace = ? AND state IN {_UNFINISHED}"
            where.append(f"id {'IN' if state == 'pending' else 'NOT IN'} ({unfinished})")
            args.append(namespace)
        rows = await self.driver.fetch(
            f"SELECT {_SEND_COLUMNS} FROM sends WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*args, limit),
        )
        return await self._statuses(rows)

    async def _statuses(self, sends: Sequence[Row]) -> list[SendStatus]:
        if not sends:
            return []
        ids = [r[0] for r in sends]
        rows = await self.driver.fetch(
            f"SELECT send_id, {_DELIVERY_COLUMNS} FROM deliveries WHERE send_id IN ({_marks(len(ids))}) ORDER BY id",
            ids,
        )
        by_send: dict[str, list[DeliveryStatus]] = {i: [] for i in ids}
        for r in rows:
            by_send[r[0]].append(DeliveryStatus(*r[1:]))
        return [SendStatus(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], by_send[r[0]]) for r in sends]

    async def queue_stats(self) -> dict[str, float]:
        """Queued deliveries (all namespaces) and the age in seconds of the oldest still queued. Deliveries
        ``sent`` and awaiting a receipt are not queued: the service has them."""
        [(depth, oldest)] = await self.driver.fetch(
            "SELECT COUNT(*), MIN(s.created_at) FROM deliveries d JOIN sends s ON s.id = d.send_id"
            f" WHERE {_QUEUED}"  # sends has no `state`: it is the delivery's
        )
        return {"depth": float(depth or 0), "oldest_age": (time.time() - oldest) if oldest else 0.0}

    async def queued_in_namespace(self, namespace: str) -> int:
        [(n,)] = await self.driver.fetch(
            f"SELECT COUNT(*) FROM deliveries WHERE namespace = ? AND {_QUEUED}", (namespace,),
            quick=True,
        )
        return int(n)

    async def prune_sends(self, older_than: float) -> int:
        """Delete sends created before `older_than` whose deliveries have all ended (and those deliveries)."""
        return await self.driver.execute(
            "DELETE FROM sends WHERE created_at < ? AND id NOT IN"
            f" (SELECT send_id FROM deliveries WHERE state IN {_UNFINISHED})", (older_than,),
        )
