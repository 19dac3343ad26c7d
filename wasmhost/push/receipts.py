"""Reading receipts of ``sent`` deliveries back: what a service that confirms delivery later (Expo) decided.

An Expo ticket ``ok`` only means Expo took the message; its receipt, ready minutes later and kept by Expo
for a day, says whether Apple or Google did. The delivery stays ``sent`` with the receipt id on its row
(`store.queue`), and any gateway's delivery worker claims it when due (`claim_receipts`), so neither a
restart nor another gateway loses it. This module turns one namespace's claimed receipts into the
deliveries' next states:

- ``ok`` → ``delivered``;
- ``DeviceNotRegistered`` → the device is pruned (unless registered again since the ticket) and ``dead``;
- a transient error (``MessageRateExceeded``) → ``queued``: the message is sent again after a backoff,
  within its TTL, as any transient failure;
- any other error → ``failed`` with Expo's reason;
- not ready (or not readable now) → polled again after `retry`, until `window` after the ticket (Expo's
  retention), then ``failed`` with reason ``ReceiptUnavailable``: whether it reached the device is unknown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..store.base import StoreError
from ..store.queue import ClaimedReceipt, DeliveryUpdate
from .dispatcher import Dispatcher
from .provider import FailureKind, Outcome, ReceiptSource
from .report import DeviceResult

__all__ = ["UNAVAILABLE_REASON", "receipt_updates", "unread"]

LOG = logging.getLogger("wasmhost.push.receipts")

UNAVAILABLE_REASON = "ReceiptUnavailable"

#: Turns a transient receipt error into the delivery's requeue (the queue's backoff and TTL rules).
Requeue = Callable[[ClaimedReceipt, DeviceResult], DeliveryUpdate]


async def receipt_updates(dispatcher: Dispatcher, claimed: Sequence[ClaimedReceipt], *, retry: float,
                          window: float, requeue: Requeue) -> list[DeliveryUpdate]:
    """One namespace's claimed receipts (one provider) read and turned into updates, one per row."""
    provider = dispatcher.providers.get(claimed[0].provider)
    ready: dict[str, Outcome] = {}
    if isinstance(provider, ReceiptSource):
        ready = await provider.check_receipts([c.receipt_id for c in claimed])
    # Without the provider (the namespace's config changed since), the receipts stay unread until the window.
    now = time.time()
    updates = []
    for c in claimed:
        outcome = ready.get(c.receipt_id)
        if outcome is None:
            updates.append(_later(c, now, retry, window))
        elif outcome.success:
            updates.append(DeliveryUpdate(c.id, "delivered", 0, outcome.status or 200))
        elif outcome.kind is FailureKind.DEAD_TARGET:
            await _prune(dispatcher, c)
            updates.append(DeliveryUpdate(c.id, "dead", 0, outcome.status, outcome.reason, outcome.message))
        elif outcome.kind is FailureKind.TRANSIENT:
            updates.append(requeue(c, DeviceResult(c.device_id, c.provider, False, outcome.status, outcome.reason,
                                                   outcome.message, state="queued", retry_after=outcome.retry_after)))
        else:
            updates.append(DeliveryUpdate(c.id, "failed", 0, outcome.status, outcome.reason, outcome.message))
    return updates


def unread(claimed: Sequence[ClaimedReceipt], retry: float, window: float) -> list[DeliveryUpdate]:
    """The claimed receipts put back unread (the store or the namespace's config is unavailable)."""
    now = time.time()
    return [_later(c, now, retry, window) for c in claimed]


def _later(c: ClaimedReceipt, now: float, retry: float, window: float) -> DeliveryUpdate:
    if now >= c.receipt_at + window:
        return DeliveryUpdate(c.id, "failed", 0, reason=UNAVAILABLE_REASON,
                              error="the service accepted the message, but its receipt could not be read before "
                                    "the service dropped it: whether it reached the device is unknown")
    return DeliveryUpdate(c.id, "sent", 0, next_attempt_at=min(now + retry, c.receipt_at + window),
                          receipt_id=c.receipt_id, receipt_at=c.receipt_at)


async def _prune(dispatcher: Dispatcher, c: ClaimedReceipt) -> None:
    # Dead only if it died after the device's last registration: compared with when the ticket came.
    try:
        pruned = await dispatcher.devices.prune_device(c.namespace, c.device_row_id, c.receipt_at)
    except StoreError as exc:
        LOG.warning("push: could not prune dead %s device %s: %s", c.provider, c.device_row_id, exc)
        return
    if pruned:
        dispatcher.observer.pruned(c.namespace, c.provider)
        LOG.info("push: pruned dead %s device %s in %s (receipt)", c.provider, c.device_row_id, c.namespace)
