"""Expo push service: batches of up to 100, tickets mapped back by position, and receipts read later so
`DeviceNotRegistered` in a receipt prunes the device too (Expo reports most dead tokens there, not in the
ticket). For durable deliveries (`Delivery.durable`) an ``ok`` ticket's receipt id goes back in the outcome
and the delivery queue reads it through `check_receipts`, from the store, in any process and after a
restart; for sends that live only in memory this provider polls the receipts itself, in the background.

A provider instance belongs to one namespace's credentials, and the dispatcher batches per provider,
so one request never mixes two tenants' access tokens. A request that mixes Expo projects
(`PUSH_TOO_MANY_EXPERIENCE_IDS`) is split along the groups Expo names and resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..push.credentials import CredentialsError
from ..push.message import PushMessage
from ..push.provider import Delivery, FailureKind, Outcome, ResolvedConfig
from ..push.redact import redact
from ..store.base import DeviceStore, StoreError
from ._breaker import CredentialsBreaker
from ._client import HTTPClient, TransportError
from ._failures import parse_retry_after, transport_failure
from ._fields import check_saved_urls, endpoint_fields, reject_unknown_fields, validate_secret
from ._pool import PoolClient
from ._tls import TLSContexts

__all__ = [
    "EXPO_BASE_URL",
    "MAX_BATCH",
    "MAX_RECEIPT_IDS",
    "ExpoProvider",
    "ExpoSpec",
    "build_message",
]

LOG = logging.getLogger("wasmhost.push")

EXPO_BASE_URL = "https://exp.host"
SEND_PATH = "/--/api/v2/push/send"
RECEIPTS_PATH = "/--/api/v2/push/getReceipts"
#: Expo's limits: messages per send request, ids per receipts request.
MAX_BATCH = 100
MAX_RECEIPT_IDS = 1000
#: Request bodies above this are gzipped (as Expo's own SDK does).
GZIP_ABOVE = 1024
#: Concurrent requests per provider instance (Expo's SDK uses 6).
EXPO_CONCURRENCY = 6
EXPO_TIMEOUT = 10.0
#: Expo advises reading receipts ~15 min after sending; it deletes them after 24 h.
RECEIPT_DELAY = 15 * 60.0
RECEIPT_RETRY = 5 * 60.0
RECEIPT_MAX_AGE = 24 * 3600.0
#: Receipts waiting to be read, per provider; the oldest are dropped beyond this.
MAX_PENDING_RECEIPTS = 100_000
#: Longest receipt id recorded (Expo's are UUIDs); a ticket with a longer one counts as delivered.
MAX_RECEIPT_ID_CHARS = 200
MAX_ERROR_TEXT = 512

_TOKEN = re.compile(r"^(?:ExponentPushToken|ExpoPushToken)\[[^\[\]\s]{1,256}\]$")
_FIELDS = {"access_token", "endpoint", "ca_bundle"}

_TICKET_ERRORS = {
    "DeviceNotRegistered": FailureKind.DEAD_TARGET,
    "MessageTooBig": FailureKind.PERMANENT,
    "MessageRateExceeded": FailureKind.TRANSIENT,
    "InvalidCredentials": FailureKind.CREDENTIALS,
    "MismatchSenderId": FailureKind.CREDENTIALS,
}


def build_message(message: PushMessage, token: str) -> dict[str, Any]:
    out: dict[str, Any] = {"to": token, "priority": "high" if message.priority == "high" else "default"}
    if message.title:
        out["title"] = message.title
    if message.body:
        out["body"] = message.body
    if message.data:
        out["data"] = message.data
    if message.sound:
        out["sound"] = message.sound
    if message.badge is not None:
        out["badge"] = message.badge
    if message.ttl_seconds is not None:
        out["ttl"] = message.ttl_seconds
    if message.channel:
        out["channelId"] = message.channel
    if message.content_available:
        out["_contentAvailable"] = True
    return out


def _details(obj: dict[str, Any]) -> dict[str, Any]:
    details = obj.get("details")
    return details if isinstance(details, dict) else {}


_OK = Outcome.ok()  # immutable, so one instance serves every successful ticket


def _ticket_outcome(ticket: Any) -> Outcome:
    if not isinstance(ticket, dict):
        return Outcome.failed(FailureKind.PERMANENT, "BadResponse", "Expo returned a malformed ticket", 200)
    if ticket.get("status") == "ok":
        return _OK
    return _error_outcome(ticket)


def _receipt_outcome(receipt: dict[str, Any]) -> Outcome:
    """A receipt's verdict: ``ok`` (Apple or Google accepted the message) or the same errors as tickets
    (DeviceNotRegistered prunes, MessageRateExceeded is worth a later resend, the rest are final)."""
    return _OK if receipt.get("status") == "ok" else _error_outcome(receipt)


def _error_outcome(ticket: dict[str, Any]) -> Outcome:
    details = _details(ticket)
    error = str(details.get("error") or "ExpoError")
    kind = _TICKET_ERRORS.get(error, FailureKind.PERMANENT)
    return Outcome.failed(kind, error, str(ticket.get("message") or "")[:MAX_ERROR_TEXT], 200)


def _request_failure(status: int, body: bytes, retry_after: str | None) -> tuple[Outcome, dict[str, Any] | None]:
    """Classify a whole-request failure; also return the first error object (for project splitting)."""
    first: dict[str, Any] | None = None
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0] if errors and isinstance(errors[0], dict) else None
    except (ValueError, AttributeError):
        pass
    code = str((first or {}).get("code") or f"HTTP {status}")
    text = str((first or {}).get("message") or "")[:MAX_ERROR_TEXT]
    if status in (401, 403) or code == "UNAUTHORIZED":
        return Outcome.failed(FailureKind.CREDENTIALS, code, text, status), first
    if status == 429 or status >= 500 or code == "TOO_MANY_REQUESTS":
        return Outcome.failed(FailureKind.TRANSIENT, code, text, status,
                              retry_after=parse_retry_after(retry_after)), first
    return Outcome.failed(FailureKind.PERMANENT, code, text, status), first


@dataclass(slots=True)
class _Pending:
    namespace: str
    device_row_id: str
    sent_at: float  # wall clock: compared with the device's registration time when pruning
    due: float  # monotonic


class ExpoProvider:
    name = "expo"
    max_batch = MAX_BATCH

    def __init__(
        self,
        store: DeviceStore,
        *,
        access_token: str = "",
        base_url: str = EXPO_BASE_URL,
        trusted: bool = True,
        allow_private_endpoints: bool = False,
        ca_bundle: str = "",
        timeout: float = EXPO_TIMEOUT,
        receipt_delay: float = RECEIPT_DELAY,
        receipt_retry: float = RECEIPT_RETRY,
        tls: TLSContexts | None = None,
        client: HTTPClient | None = None,
    ) -> None:
        self.store = store
        base = base_url.rstrip("/")
        self.send_url = base + SEND_PATH
        self.receipts_url = base + RECEIPTS_PATH
        self._headers = [("Accept", "application/json"), ("Accept-Encoding", "gzip, deflate"),
                         ("Content-Type", "application/json")]
        if access_token:
            self._headers.append(("Authorization", f"Bearer {access_token}"))
        self.timeout = timeout
        self.client = client or PoolClient(ssl_context=(tls or TLSContexts()).get(ca_bundle), guarded=not trusted,
                                 allow_private_endpoints=allow_private_endpoints, lanes=EXPO_CONCURRENCY)
        self.breaker = CredentialsBreaker()
        self.receipt_delay = receipt_delay
        self.receipt_retry = receipt_retry
        self._slots = asyncio.Semaphore(EXPO_CONCURRENCY)
        self._pending: dict[str, _Pending] = {}
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.receipts_pruned = 0

    async def send(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        blocked = self.breaker.check()
        if blocked is not None:
            return [blocked] * len(deliveries)
        return await self._send(list(deliveries), split=True)

    async def _send(self, deliveries: list[Delivery], *, split: bool) -> list[Outcome]:
        body = json.dumps([build_message(d.message, d.token) for d in deliveries], separators=(",", ":"),
                          ensure_ascii=False).encode()
        headers = self._headers
        if len(body) > GZIP_ABOVE:
            body = gzip.compress(body, compresslevel=1)  # fastest level; message JSON still shrinks several-fold
            headers = [*headers, ("Content-Encoding", "gzip")]
        try:
            async with self._slots:
                response = await self.client.request("POST", self.send_url, headers, body, timeout=self.timeout)
        except TransportError as exc:
            return [transport_failure(exc, *(d.token for d in deliveries))] * len(deliveries)
        if response.status != 200:
            outcome, error = _request_failure(response.status, response.body, response.headers.get("retry-after"))
            # One outcome is shared by the whole batch, and the dispatcher scrubs only each device's own
            # token from it: scrub every token of the batch here.
            outcome = dataclasses.replace(outcome, message=redact(outcome.message, *(d.token for d in deliveries)))
            if split and error and error.get("code") == "PUSH_TOO_MANY_EXPERIENCE_IDS":
                return await self._split(deliveries, error.get("details"), outcome)
            if outcome.kind is FailureKind.CREDENTIALS:
                self.breaker.trip(outcome)
            return [outcome] * len(deliveries)
        try:
            tickets = json.loads(response.body).get("data")
        except (ValueError, AttributeError):
            tickets = None
        if not isinstance(tickets, list) or len(tickets) != len(deliveries):
            return [Outcome.failed(FailureKind.PERMANENT, "BadResponse", "Expo returned a wrong number of tickets",
                                   200)] * len(deliveries)
        outcomes = []
        receipts: list[tuple[str, Delivery]] = []
        for delivery, ticket in zip(deliveries, tickets, strict=True):
            outcome = _ticket_outcome(ticket)
            if outcome.success and isinstance(ticket.get("id"), str):
                if delivery.durable:  # the caller records it and reads the receipt back (`check_receipts`)
                    rid = ticket["id"]
                    outcome = Outcome.ok(receipt_id=rid) if 0 < len(rid) <= MAX_RECEIPT_ID_CHARS else outcome
                else:
                    receipts.append((ticket["id"], delivery))
            outcomes.append(outcome)
        if receipts:
            self._track(receipts)
        return outcomes

    async def _split(self, deliveries: list[Delivery], details: Any, failed: Outcome) -> list[Outcome]:
        """Resend each Expo project's tokens on their own; tokens Expo did not place keep the failure."""
        groups: list[list[int]] = []
        if isinstance(details, dict):
            index = {d.token: i for i, d in enumerate(deliveries)}
            for tokens in details.values():
                if isinstance(tokens, list):
                    groups.append([index[t] for t in tokens if isinstance(t, str) and t in index])
        outcomes: list[Outcome] = [failed] * len(deliveries)
        results = await asyncio.gather(*(self._send([deliveries[i] for i in g], split=False) for g in groups if g))
        for group, group_outcomes in zip([g for g in groups if g], results, strict=True):
            for i, outcome in zip(group, group_outcomes, strict=True):
                outcomes[i] = outcome
        return outcomes

    # -- receipts ------------------------------------------------------------------------------------------

    async def check_receipts(self, receipt_ids: Sequence[str]) -> dict[str, Outcome]:
        """The receipts Expo has ready, by id (at most `MAX_RECEIPT_IDS` per request). An id that is absent
        is not ready yet, or its request failed: the caller asks again later."""
        out: dict[str, Outcome] = {}
        ids = list(dict.fromkeys(receipt_ids))
        for i in range(0, len(ids), MAX_RECEIPT_IDS):
            chunk = ids[i:i + MAX_RECEIPT_IDS]
            data = await self._read_receipts(chunk)
            for rid in chunk:
                receipt = data.get(rid)
                if isinstance(receipt, dict):
                    out[rid] = _receipt_outcome(receipt)
        return out

    async def _read_receipts(self, ids: list[str]) -> dict[str, Any]:
        try:
            body = json.dumps({"ids": ids}, separators=(",", ":")).encode()
            response = await self.client.request("POST", self.receipts_url, self._headers, body, timeout=self.timeout)
            data = json.loads(response.body).get("data") if response.status == 200 else None
        except (TransportError, ValueError, AttributeError) as exc:
            LOG.warning("push: expo receipts request failed: %s", type(exc).__name__)
            return {}
        if not isinstance(data, dict):
            LOG.warning("push: expo receipts request answered %s", response.status)
            return {}
        return data

    def _track(self, receipts: list[tuple[str, Delivery]]) -> None:
        # `_pending` stays ordered by due time (every receipt waits the same delay; postponed ones move to
        # the end), so the poller only ever looks at its head.
        sent_at, due = time.time(), time.monotonic() + self.receipt_delay
        for receipt_id, delivery in receipts:
            if len(self._pending) >= MAX_PENDING_RECEIPTS:
                self._pending.pop(next(iter(self._pending)))
            self._pending[receipt_id] = _Pending(delivery.namespace, delivery.device_row_id, sent_at, due)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_receipts(), name="expo-receipts")

    @property
    def pending_receipts(self) -> int:
        return len(self._pending)

    def _due(self, now: float) -> list[str]:
        """Receipts due now, plus those nearly due (steady traffic then costs few requests; one read early
        and not ready yet is simply asked for again later). At most one request's worth."""
        horizon = now + self.receipt_delay / 4
        due: list[str] = []
        for rid, pending in self._pending.items():
            if pending.due > horizon or len(due) == MAX_RECEIPT_IDS:
                break
            due.append(rid)
        return due

    async def _poll_receipts(self) -> None:
        while self._pending:
            now = time.monotonic()
            head = next(iter(self._pending.values()))
            if head.due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=head.due - now)
                continue
            await self._check_receipts(self._due(now))

    async def _check_receipts(self, ids: list[str]) -> None:
        data = await self._read_receipts(ids)  # empty when the request failed: every id is asked again later
        for rid in ids:
            receipt = data.get(rid)
            pending = self._pending.get(rid)
            if pending is None:
                continue
            if not isinstance(receipt, dict):  # not ready yet: ask again later, until Expo would have dropped it
                if time.time() - pending.sent_at > RECEIPT_MAX_AGE:
                    del self._pending[rid]
                else:
                    self._retry_later(rid)
                continue
            del self._pending[rid]
            details = _details(receipt)
            if receipt.get("status") == "error" and details.get("error") == "DeviceNotRegistered":
                await self._prune(pending)
            elif receipt.get("status") == "error":
                LOG.info("push: expo receipt error for device %s in %s: %s", pending.device_row_id, pending.namespace,
                         str(details.get("error") or "unknown"))

    def _retry_later(self, rid: str) -> None:
        pending = self._pending.pop(rid, None)
        if pending is not None:
            last = next(reversed(self._pending.values()), None)
            # To the end, and never due before the entry ahead of it: the order by due time holds.
            pending.due = max(time.monotonic() + self.receipt_retry, last.due if last else 0.0)
            self._pending[rid] = pending

    async def _prune(self, pending: _Pending) -> None:
        try:
            pruned = await self.store.prune_device(pending.namespace, pending.device_row_id, pending.sent_at)
        except StoreError as exc:
            LOG.warning("push: could not prune dead expo device %s: %s", pending.device_row_id, exc)
            return
        if pruned:
            self.receipts_pruned += 1
            LOG.info("push: pruned dead expo device %s in %s (receipt)", pending.device_row_id, pending.namespace)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        await self.client.aclose()


class ExpoSpec:
    """Credentials: optional ``access_token``, ``endpoint`` (base URL override) and ``ca_bundle``.

    The namespace's flat ``expo_access_token`` also turns Expo on; a saved document overrides it.
    """

    name = "expo"

    def __init__(
        self,
        store: DeviceStore,
        *,
        allow_private_endpoints: bool = False,
        timeout: float = EXPO_TIMEOUT,
        receipt_delay: float = RECEIPT_DELAY,
        receipt_retry: float = RECEIPT_RETRY,
        tls: TLSContexts | None = None,
    ) -> None:
        self.store = store
        self.allow_private_endpoints = allow_private_endpoints
        self.timeout = timeout
        self.tls = tls or TLSContexts()
        self.receipt_delay = receipt_delay
        self.receipt_retry = receipt_retry

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_fields(document, _FIELDS, "expo credentials")
        token = validate_secret(document, "access_token")
        out: dict[str, Any] = {"access_token": token} if token else {}
        # Plain http and a path prefix stay allowed for a self-hosted relay, as before.
        # The access token travels to the endpoint: plain http only for private deployments and tests.
        out.update(endpoint_fields(document, allow_private_endpoints=self.allow_private_endpoints,
                                   https_only=not self.allow_private_endpoints,
                                   path_allowed=True))
        return out

    async def check_urls(self, document: Mapping[str, Any]) -> None:
        await check_saved_urls([("endpoint", document.get("endpoint"))],
                               allow_private_endpoints=self.allow_private_endpoints)

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        return {"endpoint": document.get("endpoint", ""), "has_access_token": bool(document.get("access_token")),
                "has_ca_bundle": bool(document.get("ca_bundle"))}

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        token = token.strip()
        if not _TOKEN.match(token):
            raise CredentialsError("an Expo token must look like ExponentPushToken[…] or ExpoPushToken[…]")
        return token

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        doc = config.credentials.get(self.name)
        if doc is None and not config.expo_access_token:
            return None
        doc = doc or {}
        effective: dict[str, Any] = {
            "access_token": doc.get("access_token") or config.expo_access_token,
            "endpoint": doc.get("endpoint") or EXPO_BASE_URL,
            # Expo's own host, or an operator-set endpoint, is trusted; a tenant's endpoint is guarded.
            "trusted": not doc.get("endpoint") or self.name in config.operator_providers,
        }
        if doc.get("ca_bundle"):
            effective["ca_bundle"] = doc["ca_bundle"]
        return effective

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> ExpoProvider:
        return ExpoProvider(
            self.store,
            access_token=str(document.get("access_token") or ""),
            base_url=str(document.get("endpoint") or EXPO_BASE_URL),
            trusted=bool(document.get("trusted")),
            allow_private_endpoints=self.allow_private_endpoints,
            ca_bundle=str(document.get("ca_bundle") or ""),
            timeout=self.timeout,
            receipt_delay=self.receipt_delay,
            receipt_retry=self.receipt_retry,
            tls=self.tls,
        )
