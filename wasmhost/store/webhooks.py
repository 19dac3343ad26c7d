"""Tenant webhooks: one endpoint per namespace, and the durable events the gateway POSTs to it.

An event row is written in the same transaction as the delivery state change that causes it
(`WebhookStatements.update_with_events`, called by `QueueStatements.update_deliveries`): a delivery
that became ``dead``, ``failed`` or ``expired``, or a send whose last delivery reached a final state.
Event ids are derived from the delivery or send (``msg_<delivery id>.dead_token``, ``msg_<send id>.completed``)
and inserted with ``ON CONFLICT DO NOTHING``, so writing the same fact twice (two holders of an expired
lease, a repeated flush) yields one event. The rows are only written while the namespace has an enabled
webhook subscribed to that event: the INSERT … SELECT joins the ``webhooks`` row.

Events are then claimed under a lease exactly like deliveries (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) and finished with `finish_webhook_event`, which also keeps the endpoint's
health (last success and failure, failures in a row, failing since) and disables it once it has failed
without a success for longer than the caller's `disable_after`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .base import NotFound, StoreError
from .changes import Change
from .driver import Driver, IntegrityError, Row, Tx
from .sealing import KeyRing, SealError

__all__ = [
    "WEBHOOK_EVENTS",
    "WEBHOOK_SECRET",
    "ClaimedEvent",
    "EventOutcome",
    "FinishedEvent",
    "Webhook",
    "WebhookStatements",
]

#: Every event a webhook may subscribe to.
WEBHOOK_EVENTS = ("delivery.failed", "delivery.dead_token", "send.completed")
#: Sealing purpose of a webhook's signing secret (context: the namespace).
WEBHOOK_SECRET = "webhook-secret"
#: Delivery states that produce an event, and which.
_DELIVERY_EVENTS = {"dead": "delivery.dead_token", "failed": "delivery.failed", "expired": "delivery.failed"}
#: Ids per IN (…) list: far below both engines' parameter limits.
_CHUNK = 500

_WEBHOOK_COLUMNS = (
    "namespace, url, events, created_at, updated_at, disabled_at, disabled_reason, failing_since, failures,"
    " last_success_at, last_failure_at, last_error"
)
_COUNTS = " || ',' || ".join(
    f"'\"{state}\":' || CAST((SELECT COUNT(*) FROM deliveries x WHERE x.send_id = s.id AND x.state = '{state}')"
    " AS TEXT)"
    for state in ("delivered", "failed", "dead", "expired")
)
_INSERT_DELIVERY_EVENT = (
    "INSERT INTO webhook_events (id, namespace, event, send_id, delivery_id, user_id, device_id, provider,"
    " delivery_state, status, reason, error, occurred_at, state, next_attempt_at, updated_at)"
    " SELECT CAST(? AS TEXT), d.namespace, CAST(? AS TEXT), d.send_id, d.id, s.user_id, d.device_id, d.provider,"
    " d.state, d.status, d.reason, d.error, d.updated_at, 'pending', d.updated_at, d.updated_at"
    " FROM deliveries d JOIN sends s ON s.id = d.send_id JOIN webhooks w ON w.namespace = d.namespace"
    " WHERE d.id = ? AND d.state = ? AND w.disabled_at = 0 AND w.events LIKE ?"
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_COMPLETED = (
    "INSERT INTO webhook_events (id, namespace, event, send_id, user_id, counts_json, occurred_at, state,"
    " next_attempt_at, updated_at)"
    " SELECT CAST(? AS TEXT), s.namespace, 'send.completed', s.id, s.user_id, '{' || " + _COUNTS + " || '}',"
    " CAST(? AS DOUBLE PRECISION), 'pending', CAST(? AS DOUBLE PRECISION), CAST(? AS DOUBLE PRECISION)"
    " FROM sends s JOIN webhooks w ON w.namespace = s.namespace"
    " WHERE s.id = ? AND w.disabled_at = 0 AND w.events LIKE '%,send.completed,%'"
    " AND NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.send_id = s.id AND x.state IN ('queued', 'sending'))"
    " ON CONFLICT (id) DO NOTHING"
)
_EVENT_COLUMNS = (
    "e.id, e.namespace, e.event, e.send_id, e.delivery_id, e.user_id, e.device_id, e.provider, e.delivery_state,"
    " e.status, e.reason, e.error, e.counts_json, e.occurred_at, e.attempts, w.url, w.secret_sealed"
)


def _lock_key(namespace: str) -> int:
    """A signed 64-bit lock key for one namespace's webhook row."""
    return int.from_bytes(hashlib.sha256(f"webhook\x00{namespace}".encode()).digest()[:8], "big", signed=True)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _events_text(events: Sequence[str]) -> str:
    """Stored as ``,a,b,`` so that ``LIKE '%,a,%'`` matches exactly one name."""
    return "," + ",".join(events) + ","


def _when(value: float) -> float | None:
    return value or None


@dataclass(frozen=True, slots=True)
class Webhook:
    """A namespace's webhook. `secret` is filled only by ``get_webhook(with_secret=True)``."""

    namespace: str
    url: str
    events: tuple[str, ...]
    created_at: float
    updated_at: float
    disabled_at: float
    disabled_reason: str
    failing_since: float
    failures: int
    last_success_at: float
    last_failure_at: float
    last_error: str
    secret: str = ""

    @property
    def enabled(self) -> bool:
        return not self.disabled_at

    def public(self) -> dict[str, Any]:
        """What the tenant may see: never the secret."""
        return {
            "namespace": self.namespace,
            "url": self.url,
            "events": list(self.events),
            "state": "enabled" if self.enabled else "disabled",
            "disabled_at": _when(self.disabled_at),
            "disabled_reason": self.disabled_reason or None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_success_at": _when(self.last_success_at),
            "last_failure_at": _when(self.last_failure_at),
            "failing_since": _when(self.failing_since),
            "failures": self.failures,
            "last_error": self.last_error or None,
        }


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event leased for one attempt, with where it goes and the (opened) signing secret."""

    id: str
    namespace: str
    event: str
    send_id: str
    delivery_id: str
    user_id: str
    device_id: str
    provider: str
    delivery_state: str
    status: int
    reason: str
    error: str
    counts_json: str
    occurred_at: float
    attempts: int
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """One attempt's result, written only if `owner` (the caller of `finish_webhook_event`) still holds the lease."""

    id: str
    namespace: str
    success: bool
    status: int = 0
    #: Why it failed: an error class or "HTTP 500", never a URL or a secret.
    error: str = ""
    #: When to try again after a failure.
    next_attempt_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FinishedEvent:
    recorded: bool
    #: The attempt disabled the endpoint (it had failed for longer than `disable_after`).
    disabled: bool = False
    #: Pending events dropped because the endpoint was disabled.
    dropped: int = 0


class WebhookStatements:
    """Mixed into `SQLStore`: the webhook statements over its driver."""

    driver: Driver
    keyring: KeyRing

    # -- the endpoint ----------------------------------------------------------------------------

    async def put_webhook(self, namespace: str, url: str, events: Sequence[str], new_secret: str, *,
                          rotate: bool = False) -> tuple[Webhook, str | None]:
        """Create or replace the namespace's webhook; (re-)enables it and clears its failure streak.

        The signing secret stays what it was unless `rotate`; a new webhook (or a rotation) takes
        `new_secret`, which is then returned (else None) so the caller can show it once. One transaction
        under a per-namespace lock: two PUTs at once cannot both believe they created the webhook."""
        now = time.time()
        sealed = self.keyring.seal(new_secret.encode(), WEBHOOK_SECRET, namespace)
        try:
            async with self.driver.transaction() as tx:
                await tx.lock(_lock_key(namespace))
                existing = await tx.fetch("SELECT secret_sealed FROM webhooks WHERE namespace = ?" + tx.for_update,
                                          (namespace,))
                made = rotate or not existing
                if not existing:
                    await tx.execute(
                        "INSERT INTO webhooks (namespace, url, events, secret_sealed, created_at, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (namespace, url, _events_text(events), sealed, now, now),
                    )
                else:
                    await tx.execute(
                        "UPDATE webhooks SET url = ?, events = ?, secret_sealed = ?, updated_at = ?, disabled_at = 0,"
                        " disabled_reason = '', failing_since = 0, failures = 0, last_error = '' WHERE namespace = ?",
                        (url, _events_text(events), sealed if made else existing[0][0], now, namespace),
                    )
                tx.announce(Change(namespace, "webhook"))
        except IntegrityError as exc:
            if exc.kind == "foreign_key":
                raise NotFound(f"namespace {namespace!r} not found") from None
            raise
        hook = await self.get_webhook(namespace)
        if hook is None:  # deleted in between by another request
            raise NotFound("webhook not found")
        return hook, new_secret if made else None

    async def get_webhook(self, namespace: str, *, with_secret: bool = False) -> Webhook | None:
        rows = await self.driver.fetch(
            f"SELECT {_WEBHOOK_COLUMNS}, secret_sealed FROM webhooks WHERE namespace = ?", (namespace,)
        )
        if not rows:
            return None
        r = rows[0]
        secret = ""
        if with_secret:
            try:
                secret = self.keyring.open(r[12], WEBHOOK_SECRET, namespace).decode()
            except SealError as exc:
                raise StoreError(str(exc)) from None
        return Webhook(r[0], r[1], tuple(e for e in str(r[2]).split(",") if e), r[3], r[4], r[5], r[6], r[7], r[8],
                       r[9], r[10], r[11], secret)

    async def delete_webhook(self, namespace: str) -> bool:
        """Remove the webhook and its events not yet delivered; False when there was none."""
        async with self.driver.transaction() as tx:
            await tx.execute("DELETE FROM webhook_events WHERE namespace = ? AND state = 'pending'", (namespace,))
            deleted = await tx.execute("DELETE FROM webhooks WHERE namespace = ?", (namespace,))
            if deleted:
                tx.announce(Change(namespace, "webhook"))
        return bool(deleted)

    async def webhook_namespaces(self) -> set[str]:
        """Namespaces whose webhook is enabled (the delivery queue writes events only for these)."""
        return {r[0] for r in await self.driver.fetch("SELECT namespace FROM webhooks WHERE disabled_at = 0")}

    # -- writing events with the delivery states that cause them -----------------------------------

    async def update_with_events(self, tx: Tx, update_sql: str, rows: Sequence[Sequence[Any]],
                                 final_ids: Sequence[str]) -> None:
        """In `tx`: run `update_sql` for each row (the deliveries' new states, `queue._UPDATE`), then write
        the events those states cause. `final_ids` are the deliveries given a final state.

        The sends concerned are locked first, in id order: two transactions finishing the last deliveries of
        one send then take turns, and the second sees the first's rows, so "every delivery is final" is
        seen by exactly one of them (on SQLite the transaction holds the whole file anyway)."""
        send_ids: list[str] = []
        for chunk in _chunks(final_ids):
            send_ids += [r[0] for r in await tx.fetch(
                f"SELECT DISTINCT send_id FROM deliveries WHERE id IN ({_marks(len(chunk))})", chunk)]
        send_ids = sorted(set(send_ids))
        for chunk in _chunks(send_ids):
            await tx.fetch(f"SELECT id FROM sends WHERE id IN ({_marks(len(chunk))}) ORDER BY id" + tx.for_update,
                           chunk)
        for row in rows:
            await tx.execute(update_sql, row)
        states = {str(row[-2]): str(row[0]) for row in rows}  # delivery id -> the state just written
        for delivery_id in final_ids:
            state = states.get(delivery_id, "")
            event = _DELIVERY_EVENTS.get(state)
            if event is not None:
                # Only if the row now holds that state: an update that lost its lease wrote nothing.
                await tx.execute(_INSERT_DELIVERY_EVENT, (f"msg_{delivery_id}.{event.split('.')[1]}", event,
                                                          delivery_id, state, f"%,{event},%"))
        now = time.time()
        for send_id in send_ids:
            await tx.execute(_INSERT_COMPLETED, (f"msg_{send_id}.completed", now, now, now, send_id))

    # -- the worker's statements ---------------------------------------------------------------------

    async def claim_webhook_events(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedEvent]:
        """Lease up to `limit` due events of enabled webhooks (due: retry time passed, no live lease)."""
        now = time.time()
        async with self.driver.transaction() as tx:
            due = await tx.fetch(
                "SELECT id FROM webhook_events WHERE state = 'pending' AND next_attempt_at <= ? AND lease_until < ?"
                " AND namespace IN (SELECT namespace FROM webhooks WHERE disabled_at = 0)"
                " ORDER BY next_attempt_at LIMIT ?" + tx.skip_locked, (now, now, limit),
            )
            ids = [r[0] for r in due]
            if not ids:
                return []
            await tx.execute(
                f"UPDATE webhook_events SET lease_owner = ?, lease_until = ? WHERE id IN ({_marks(len(ids))})",
                (owner, now + lease_seconds, *ids),
            )
            rows = await tx.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM webhook_events e JOIN webhooks w ON w.namespace = e.namespace"
                f" WHERE e.id IN ({_marks(len(ids))}) ORDER BY e.next_attempt_at, e.id", ids,
            )
        return [self._claimed(r) for r in rows]

    def _claimed(self, r: Row) -> ClaimedEvent:
        try:
            secret = self.keyring.open(r[16], WEBHOOK_SECRET, r[1]).decode()
        except SealError:
            secret = ""  # the worker records the failure; the text never carries the sealed value
        values: tuple[Any, ...] = (*r[:16], secret)
        return ClaimedEvent(*values)

    async def finish_webhook_event(self, owner: str, outcome: EventOutcome, *, disable_after: float) -> FinishedEvent:
        """Record one attempt and the endpoint's health, in one transaction. A failure on an endpoint that
        has had no success since `failing_since`, more than `disable_after` seconds ago, disables it and
        drops its pending events (a PUT of the webhook enables it again)."""
        now = time.time()
        ns = outcome.namespace
        async with self.driver.transaction() as tx:
            if outcome.success:
                done = await tx.execute(
                    "UPDATE webhook_events SET state = 'delivered', attempts = attempts + 1, last_status = ?,"
                    " last_error = '', lease_owner = '', lease_until = 0, updated_at = ?"
                    " WHERE id = ? AND lease_owner = ?",
                    (outcome.status, now, outcome.id, owner),
                )
                if done:
                    await tx.execute(
                        "UPDATE webhooks SET last_success_at = ?, failing_since = 0, failures = 0, last_error = ''"
                        " WHERE namespace = ?", (now, ns),
                    )
                return FinishedEvent(bool(done))
            error = outcome.error[:200]
            done = await tx.execute(
                "UPDATE webhook_events SET attempts = attempts + 1, last_status = ?, last_error = ?,"
                " next_attempt_at = ?, lease_owner = '', lease_until = 0, updated_at = ?"
                " WHERE id = ? AND lease_owner = ?",
                (outcome.status, error, outcome.next_attempt_at, now, outcome.id, owner),
            )
            if not done:
                return FinishedEvent(False)
            await tx.execute(
                "UPDATE webhooks SET last_failure_at = ?, failures = failures + 1, last_error = ?,"
                " failing_since = CASE WHEN failing_since = 0 THEN ? ELSE failing_since END"
                " WHERE namespace = ? AND disabled_at = 0", (now, error, now, ns),
            )
            disabled = await tx.execute(
                "UPDATE webhooks SET disabled_at = ?, disabled_reason = ? WHERE namespace = ? AND disabled_at = 0"
                " AND failing_since > 0 AND failing_since <= ?",
                (now, f"every attempt failed for more than {disable_after:g} s (last: {error})"[:300], ns,
                 now - disable_after),
            )
            dropped = 0
            if disabled:
                dropped = await tx.execute(
                    "UPDATE webhook_events SET state = 'dropped', last_error = 'the endpoint was disabled',"
                    " lease_owner = '', lease_until = 0, updated_at = ? WHERE namespace = ? AND state = 'pending'",
                    (now, ns),
                )
                tx.announce(Change(ns, "webhook"))
        return FinishedEvent(True, bool(disabled), dropped)

    async def defer_webhook_events(self, owner: str, ids: Sequence[str], until: float) -> int:
        """Give back claimed events unattempted, due again at `until` (not an attempt: no count, no health)."""
        done = 0
        for chunk in _chunks(ids):
            done += await self.driver.execute(
                "UPDATE webhook_events SET lease_owner = '', lease_until = 0, next_attempt_at = ?"
                f" WHERE lease_owner = ? AND id IN ({_marks(len(chunk))})", (until, owner, *chunk),
            )
        return done

    async def release_webhook_leases(self, owner: str) -> int:
        """Put back what `owner` still holds (it is stopping)."""
        return await self.driver.execute(
            "UPDATE webhook_events SET lease_owner = '', lease_until = 0 WHERE state = 'pending' AND lease_owner = ?",
            (owner,),
        )

    async def cap_webhook_events(self, max_pending: int) -> int:
        """Drop the oldest pending events of each namespace beyond `max_pending`; how many were dropped."""
        over = await self.driver.fetch(
            "SELECT namespace, COUNT(*) FROM webhook_events WHERE state = 'pending' GROUP BY namespace"
            " HAVING COUNT(*) > ?", (max_pending,),
        )
        dropped = 0
        now = time.time()
        for namespace, count in over:
            dropped += await self.driver.execute(
                "UPDATE webhook_events SET state = 'dropped', last_error = 'over the pending events cap',"
                " lease_owner = '', lease_until = 0, updated_at = ? WHERE id IN (SELECT id FROM webhook_events"
                " WHERE namespace = ? AND state = 'pending' ORDER BY occurred_at, id LIMIT ?)",
                (now, namespace, int(count) - max_pending),
            )
        return dropped

    async def prune_webhook_events(self, older_than: float) -> int:
        """Delete finished events last touched before `older_than`, and events still pending that happened before it."""
        done = await self.driver.execute(
            "DELETE FROM webhook_events WHERE updated_at < ? AND state != 'pending'", (older_than,)
        )
        return done + await self.driver.execute(
            "DELETE FROM webhook_events WHERE state = 'pending' AND occurred_at < ?", (older_than,)
        )
