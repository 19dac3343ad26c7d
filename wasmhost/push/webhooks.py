"""Tenant webhooks: checking a webhook's settings, signing its events, and the worker that POSTs them.

Events are rows of the store (`store.webhooks`), written in the transaction of the delivery states that
cause them. `WebhookWorker` claims due events under a lease, POSTs each through the URL guard (a
`PoolClient` whose connections go only to checked public addresses, unless the operator allows private
ones), signed per Standard Webhooks (``webhook-id`` stays the same across retries, ``webhook-timestamp``
and ``webhook-signature`` are made per attempt), and retries failures with doubling backoff that
honours ``Retry-After``. A 2xx answer delivers the event. An endpoint that has failed without a single
success for longer than `WebhookSettings.disable_after` is disabled (the store records why and since
when); a PUT of the webhook enables it again.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from standardwebhooks.webhooks import Webhook as Signer

from ..providers import _client as http_errors
from ..providers._client import HTTPClient
from ..providers._failures import parse_retry_after
from ..providers._pool import PoolClient
from ..providers._tls import TLSContexts
from ..store.base import StoreError
from ..store.webhooks import WEBHOOK_EVENTS, ClaimedEvent, EventOutcome, FinishedEvent
from .backoff import backoff
from .urlguard import MAX_URL_BYTES, UnsafeURL, check_url, check_url_syntax

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "SECRET_PREFIX",
    "WEBHOOK_EVENTS",
    "WebhookError",
    "WebhookSettings",
    "WebhookWorker",
    "check_events",
    "check_webhook_url",
    "event_payload",
    "new_secret",
    "sign",
]

LOG = logging.getLogger("wasmhost.push.webhooks")

SECRET_PREFIX = "whsec_"
#: Largest event body; a longer error text is cut to fit. (An endpoint's answer is read up to the pool
#: client's `MAX_RESPONSE_BODY`, then refused; only its status matters.)
MAX_PAYLOAD_BYTES = 8 * 1024
#: Seconds between re-reads of which namespaces have a webhook (changes announced by the store are applied at once).
REFRESH_EVERY = 5.0
#: Seconds between the worker's sweeps: the per-namespace cap, then (less often) retention.
CAP_EVERY = 10.0
PRUNE_EVERY = 600.0
#: Events of one namespace in flight at once in one worker: a slow endpoint cannot take every slot. Claimed
#: events beyond it are given back, due a little later (`DEFER_SECONDS`), so other namespaces' come first.
MAX_IN_FLIGHT_PER_NAMESPACE = 8
DEFER_SECONDS = 1.0
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class WebhookError(ValueError):
    """A webhook setting is refused; the text says why and never echoes the URL."""


@dataclass(frozen=True)
class WebhookSettings:
    #: An endpoint failing (no success) for longer than this is disabled (``WASMHOST_WEBHOOK_DISABLE_AFTER``).
    disable_after: float = 3 * 24 * 3600.0
    #: Events a namespace may have waiting; beyond it the oldest are dropped (``WASMHOST_WEBHOOK_MAX_PENDING``).
    max_pending: int = 10_000
    #: Bound on one whole POST: connect, send, and read the answer (``WASMHOST_WEBHOOK_TIMEOUT``).
    timeout: float = 10.0
    #: Backoff after a failed attempt: doubling from `retry_base`, at most `retry_max` (never below Retry-After).
    retry_base: float = 5.0
    retry_max: float = 3600.0
    lease_seconds: float = 60.0
    #: Events one worker holds in flight at most (also its connections: no request waits for one).
    batch: int = 50
    poll_interval: float = 1.0
    #: Delivered or dropped events are deleted this long after their last attempt (pending ones this long
    #: after they happened).
    retention: float = 7 * 24 * 3600.0

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        return backoff(attempts, retry_after, self.retry_base, self.retry_max)


# -- settings a tenant gives -------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret: ``whsec_`` and 32 random bytes in base64 (the Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def check_events(events: Sequence[str]) -> tuple[str, ...]:
    """A non-empty subset of `WEBHOOK_EVENTS`, in that order, each once."""
    if not events:
        raise WebhookError(f"events must name at least one of: {', '.join(WEBHOOK_EVENTS)}")
    unknown = sorted({e for e in events if e not in WEBHOOK_EVENTS})
    if unknown:
        shown = ", ".join(repr(e[:40]) for e in unknown[:3])
        raise WebhookError(f"unknown event {shown} (events: {', '.join(WEBHOOK_EVENTS)})")
    return tuple(e for e in WEBHOOK_EVENTS if e in events)


def _is_loopback(host: str) -> bool:
    host = host.rstrip(".").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def check_webhook_url(url: str, *, allow_private_endpoints: bool) -> str:
    """The URL, normalised, once the SSRF guard accepts it (the same guard and setting as ntfy and Web Push
    URLs: shape, then every resolved address public, and again at each connect). It must be https; plain
    http only to a loopback address, and only where the operator allows private endpoints (tests, a
    receiver beside the gateway)."""
    if len(url.encode()) > MAX_URL_BYTES:
        raise WebhookError(f"url is longer than {MAX_URL_BYTES} bytes")
    try:
        parsed = check_url_syntax(url, allow_private_endpoints=allow_private_endpoints)
    except UnsafeURL as exc:
        raise WebhookError(f"url rejected: {exc}") from None
    if parsed.scheme != "https" and not (allow_private_endpoints and _is_loopback(parsed.host)):
        raise WebhookError("url must be an https URL")
    if parsed.fragment:
        raise WebhookError("url must not have a fragment")
    try:
        await check_url(url, allow_private_endpoints=allow_private_endpoints)
    except UnsafeURL as exc:
        raise WebhookError(f"url rejected: {exc}") from None
    return str(parsed)


# -- what is sent ----------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_payload(event: ClaimedEvent) -> bytes:
    """The body: ``{type, timestamp, namespace, data}`` (Standard Webhooks' shape), at most
    `MAX_PAYLOAD_BYTES`. Never a device token: the rows it is built from hold none."""
    data: dict[str, Any] = {"send_id": event.send_id, "user_id": event.user_id}
    if event.event == "send.completed":
        try:
            data["counts"] = json.loads(event.counts_json)
        except ValueError:
            data["counts"] = {}
    else:
        data.update(delivery_id=event.delivery_id, device_id=event.device_id, provider=event.provider,
                    state=event.delivery_state, status=event.status, reason=event.reason, error=event.error)
    body = {"type": event.event, "timestamp": _iso(event.occurred_at), "namespace": event.namespace, "data": data}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    if len(text) > MAX_PAYLOAD_BYTES and "error" in data:
        over = len(text) - MAX_PAYLOAD_BYTES
        data["error"] = data["error"].encode()[:max(0, len(data["error"].encode()) - over - 3)].decode(
            "utf-8", "ignore") + "..."
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return text


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (standardwebhooks' signer)."""
    return Signer(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())


# -- the worker ------------------------------------------------------------------------------------


class WebhookStore(Protocol):
    async def webhook_namespaces(self) -> set[str]: ...
    async def claim_webhook_events(self, owner: str, lease_seconds: float, limit: int) -> list[ClaimedEvent]: ...
    async def finish_webhook_event(self, owner: str, outcome: EventOutcome, *, disable_after: float
                                   ) -> FinishedEvent: ...
    async def defer_webhook_events(self, owner: str, ids: Sequence[str], until: float) -> int: ...
    async def release_webhook_leases(self, owner: str) -> int: ...
    async def cap_webhook_events(self, max_pending: int) -> int: ...
    async def prune_webhook_events(self, older_than: float) -> int: ...


class WebhookWorker:
    """This process's webhook sender. `namespaces` (those with an enabled webhook) is handed to the
    delivery queue through `on_namespaces`, so only their state changes pay for writing events."""

    def __init__(self, store: WebhookStore, settings: WebhookSettings | None = None, *,
                 allow_private_endpoints: bool = False, client: HTTPClient | None = None, owner: str = "",
                 on_namespaces: Callable[[frozenset[str]], None] | None = None) -> None:
        self.store = store
        self.settings = settings or WebhookSettings()
        self.owner = owner or uuid.uuid4().hex
        # One pool with a connection per event in flight: a request never queues for a connection (where
        # the wait would count against its endpoint's timeout), and connections to one endpoint are reused.
        self.client = client or PoolClient(ssl_context=TLSContexts().get(), guarded=True,
                                           allow_private_endpoints=allow_private_endpoints,
                                           connections=self.settings.batch, keepalive_expiry=30.0)
        self.on_namespaces = on_namespaces
        self.namespaces: frozenset[str] = frozenset()
        #: Attempts by outcome (success, http_error, timeout, unreachable, blocked, no_secret), events dropped
        #: by reason (cap, disabled), endpoints disabled.
        self.attempts: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)
        self.disabled = 0
        self._wake = asyncio.Event()
        self._stale = True
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._by_namespace: dict[str, int] = defaultdict(int)

    # -- which namespaces have a webhook ------------------------------------------------------------

    async def refresh(self) -> None:
        try:
            namespaces = frozenset(await self.store.webhook_namespaces())
        except StoreError as exc:
            LOG.warning("webhooks: reading which namespaces have a webhook failed: %s", exc)
            return
        self._stale = False
        self.namespaces = namespaces
        if self.on_namespaces is not None:
            self.on_namespaces(namespaces)

    def changed(self) -> None:
        """A webhook was saved, deleted or disabled (here or, announced by the store, elsewhere)."""
        self._stale = True
        self.wake()

    # -- running -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wasmhost-webhook-worker")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for t in list(self._in_flight):
            t.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        try:
            await self.store.release_webhook_leases(self.owner)
        except StoreError as exc:
            LOG.warning("webhooks: could not release leases on close: %s", exc)
        await self.client.aclose()

    async def sweep(self, *, prune: bool = False) -> None:
        """Drop events beyond the per-namespace cap (oldest first); with `prune`, delete old ones."""
        try:
            dropped = await self.store.cap_webhook_events(self.settings.max_pending)
            if dropped:
                self.dropped["cap"] += dropped
                LOG.warning("webhooks: dropped %d events over the per-namespace cap", dropped)
            if prune:
                await self.store.prune_webhook_events(time.time() - self.settings.retention)
        except StoreError as exc:
            LOG.warning("webhooks: sweeping events failed: %s", exc)

    async def _run(self) -> None:
        s = self.settings
        now = time.monotonic()
        next_refresh, next_cap, next_prune = now, now, now
        while True:
            now = time.monotonic()
            if self._stale or now >= next_refresh:
                next_refresh = now + REFRESH_EVERY
                await self.refresh()
            if now >= next_cap:
                next_cap = now + CAP_EVERY
                prune = now >= next_prune
                if prune:
                    next_prune = now + PRUNE_EVERY
                await self.sweep(prune=prune)
            room = s.batch - len(self._in_flight)
            claimed: list[ClaimedEvent] = []
            if room > 0 and self.namespaces:
                try:
                    claimed = await self.store.claim_webhook_events(self.owner, s.lease_seconds, room)
                except StoreError as exc:
                    LOG.warning("webhooks: claiming events failed: %s", exc)
            deferred = [e.id for e in claimed if not self._spawn(e)]
            if deferred:
                try:
                    await self.store.defer_webhook_events(self.owner, deferred, time.time() + DEFER_SECONDS)
                except StoreError as exc:  # their leases run out instead
                    LOG.warning("webhooks: giving back deferred events failed: %s", exc)
            if len(deferred) < len(claimed):
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), s.poll_interval)
            except TimeoutError:
                pass

    def _spawn(self, event: ClaimedEvent) -> bool:
        """Start the event's attempt, unless its namespace already has its share in flight."""
        ns = event.namespace
        if self._by_namespace[ns] >= MAX_IN_FLIGHT_PER_NAMESPACE:
            return False
        self._by_namespace[ns] += 1
        task = asyncio.ensure_future(self.attempt(event))
        self._in_flight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._by_namespace[ns] -= 1
            if not self._by_namespace[ns]:
                del self._by_namespace[ns]
            self._done(t)

        task.add_done_callback(done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOG.error("webhooks: an attempt failed unexpectedly: %s", type(task.exception()).__name__)
        self._wake.set()

    async def run_once(self) -> int:
        """Claim and attempt one batch, awaiting it (tests drive the worker with this)."""
        await self.refresh()
        claimed = await self.store.claim_webhook_events(self.owner, self.settings.lease_seconds, self.settings.batch)
        await asyncio.gather(*(self.attempt(e) for e in claimed))
        return len(claimed)

    async def attempt(self, event: ClaimedEvent) -> None:
        """POST one event and record the outcome (the store keeps the endpoint's health)."""
        outcome = await self._post(event)
        s = self.settings
        try:
            finished = await self.store.finish_webhook_event(self.owner, outcome, disable_after=s.disable_after)
        except StoreError as exc:
            # The event keeps its lease; when it runs out the event is attempted again (a duplicate at worst).
            LOG.error("webhooks: recording an attempt failed: %s", exc)
            return
        if finished.disabled:
            self.disabled += 1
            self.dropped["disabled"] += finished.dropped
            LOG.warning("webhooks: disabled the webhook of namespace %s: it failed for more than %g s",
                        event.namespace, s.disable_after)
            self.changed()

    async def _post(self, event: ClaimedEvent) -> EventOutcome:
        def failed(label: str, error: str, status: int = 0, retry_after: float | None = None) -> EventOutcome:
            self.attempts[label] += 1
            delay = self.settings.backoff(event.attempts + 1, retry_after)
            return EventOutcome(event.id, event.namespace, False, status, error, time.time() + delay)

        if not event.secret:
            return failed("no_secret", "the signing secret does not open with this gateway's keys")
        body = event_payload(event)
        stamp = int(time.time())
        headers = [
            ("Content-Type", "application/json"),
            ("webhook-id", event.id),
            ("webhook-timestamp", str(stamp)),
            ("webhook-signature", sign(event.secret, event.id, stamp, body)),
        ]
        try:
            # The client's timeout bounds each phase; this bounds the whole request (a drip-fed answer too).
            async with asyncio.timeout(self.settings.timeout):
                response = await self.client.request("POST", event.url, headers, body, timeout=self.settings.timeout)
        except TimeoutError:
            return failed("timeout", f"no answer within {self.settings.timeout:g} s")
        except http_errors.Blocked:
            return failed("blocked", "the URL guard refused the address (not a public address)")
        except http_errors.RequestTimeout:
            return failed("timeout", f"no answer within {self.settings.timeout:g} s")
        except http_errors.TransportError as exc:
            return failed("unreachable", f"the request failed ({type(exc).__name__})")
        if 200 <= response.status < 300:
            self.attempts["success"] += 1
            return EventOutcome(event.id, event.namespace, True, response.status)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return failed("http_error", f"HTTP {response.status}", response.status, retry_after)
