"""Webhook statements on SQLite and PostgreSQL: the secret sealed at rest, events written in the
transaction of the delivery states that cause them (once each, only for subscribed enabled webhooks),
send.completed exactly once even when two transactions finish a send's last deliveries together, leased
claims, endpoint health and disabling, the pending cap and retention."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.store.conftest import Backend
from wasmhost.store import KeyRing
from wasmhost.store.queue import DeliveryUpdate, Target
from wasmhost.store.webhooks import EventOutcome

pytestmark = pytest.mark.asyncio

SECRET = "whsec_" + "A" * 43 + "="
ALL = ("delivery.failed", "delivery.dead_token", "send.completed")
TARGETS = [Target("row-a", "phone", "outbox"), Target("row-b", "tablet", "outbox")]


async def _leased_send(store: Any, owner: str = "w") -> tuple[str, list[str]]:
    accepted = await store.accept_send("acme", "alice", {"title": "hi"}, TARGETS, ttl_seconds=60,
                                       lease_owner=owner, lease_seconds=30)
    return accepted.send_id, list(accepted.delivery_ids.values())


async def _events(backend: Backend) -> list[tuple[Any, ...]]:
    return await backend.fetchall("SELECT id, event, device_id, delivery_state, reason, counts_json, state"
                                  " FROM webhook_events ORDER BY id")


async def test_the_secret_is_sealed_and_the_public_view_never_shows_it(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    hook, shown = await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    assert shown == SECRET and hook.secret == "" and hook.public()["state"] == "enabled"
    assert "secret" not in json.dumps(hook.public())
    # A change of url/events keeps the secret (and returns none to show); a rotation replaces it.
    hook, shown = await store.put_webhook("acme", "https://example.com/new", ALL[:1], "whsec_" + "B" * 44)
    assert shown is None and hook.url == "https://example.com/new" and hook.events == ALL[:1]
    assert (await store.get_webhook("acme", with_secret=True)).secret == SECRET
    rotated = "whsec_" + "C" * 44
    assert (await store.put_webhook("acme", "https://example.com/hook", ALL, rotated, rotate=True))[1] == rotated
    assert (await store.get_webhook("acme", with_secret=True)).secret == rotated
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET, rotate=True)
    [(sealed,)] = await backend.fetchall("SELECT secret_sealed FROM webhooks")
    assert SECRET not in sealed and sealed.startswith("wh1:")
    assert (await store.get_webhook("acme", with_secret=True)).secret == SECRET
    assert await store.get_webhook("other") is None
    assert await store.webhook_namespaces() == {"acme"}
    assert await store.delete_webhook("acme") and not await store.delete_webhook("acme")


async def test_final_states_write_events_in_their_transaction_once(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    send_id, (a, b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1, 410, "Unregistered")], events=True)
    assert [(e[1], e[2], e[3]) for e in await _events(backend)] == [("delivery.dead_token", "phone", "dead")]
    # The send is not complete yet; the second delivery's permanent failure completes it.
    await store.update_deliveries("w", [DeliveryUpdate(b, "failed", 1, 400, "BadRequest", "nope")], events=True)
    events = await _events(backend)
    assert [e[1] for e in events] == ["delivery.dead_token", "delivery.failed", "send.completed"]
    counts = json.loads(events[2][5])
    assert counts == {"delivered": 0, "failed": 1, "dead": 1, "expired": 0}
    # A repeated flush (or a second holder's write of the same fact) adds nothing.
    await store.update_deliveries("w", [DeliveryUpdate(b, "failed", 1, 400, "BadRequest")], events=True)
    assert len(await _events(backend)) == 3


async def test_no_events_without_a_subscribed_enabled_webhook_or_a_lease(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ("send.completed",), SECRET)
    _, (a, b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1)], events=True)  # not subscribed
    await store.update_deliveries("thief", [DeliveryUpdate(b, "failed", 1)], events=True)  # not the lease holder
    assert await _events(backend) == []
    rows = await backend.fetchall("SELECT state FROM deliveries ORDER BY id")
    assert rows == [("dead",), ("sending",)]


async def test_two_transactions_finishing_one_send_complete_it_once(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ("send.completed",), SECRET)
    for _ in range(5):
        send_id, (a, b) = await _leased_send(store)
        await asyncio.gather(
            store.update_deliveries("w", [DeliveryUpdate(a, "delivered", 1)], events=True),
            store.update_deliveries("w", [DeliveryUpdate(b, "delivered", 1)], events=True),
        )
        rows = await backend.fetchall("SELECT counts_json FROM webhook_events WHERE send_id = ?", send_id)
        assert len(rows) == 1 and json.loads(rows[0][0])["delivered"] == 2


async def test_claims_attempts_health_and_disabling(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    _, (a, _b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1)], events=True)
    [event] = await store.claim_webhook_events("w1", 30, 10)
    assert event.secret == SECRET and event.url == "https://example.com/hook" and event.device_id == "phone"
    assert await store.claim_webhook_events("w2", 30, 10) == []  # leased
    # A late holder cannot record anything; the holder's failure schedules a retry and starts the streak.
    assert not (await store.finish_webhook_event("w2", EventOutcome(event.id, "acme", True, 200),
                                                 disable_after=60)).recorded
    done = await store.finish_webhook_event("w1", EventOutcome(event.id, "acme", False, 500, "HTTP 500",
                                                               time.time() + 0.2), disable_after=60)
    assert done.recorded and not done.disabled
    hook = await store.get_webhook("acme")
    assert hook.failures == 1 and hook.failing_since and hook.last_error == "HTTP 500"
    assert await store.claim_webhook_events("w1", 30, 10) == []  # not due yet
    await asyncio.sleep(0.25)
    [again] = await store.claim_webhook_events("w1", 30, 10)
    assert again.id == event.id and again.attempts == 1
    done = await store.finish_webhook_event("w1", EventOutcome(event.id, "acme", False, 500, "HTTP 500",
                                                               time.time()), disable_after=0.1)
    assert done.disabled and done.dropped == 1
    hook = await store.get_webhook("acme")
    assert hook.public()["state"] == "disabled" and "HTTP 500" in hook.disabled_reason and hook.disabled_at
    assert await store.webhook_namespaces() == set()
    assert await store.claim_webhook_events("w1", 30, 10) == []
    # A PUT enables it again, with a clean streak.
    hook, shown = await store.put_webhook("acme", "https://example.com/hook", ALL, "whsec_other")
    assert hook.enabled and hook.failures == 0 and not hook.failing_since and shown is None


async def test_concurrent_first_puts_agree_on_one_secret(store: Any) -> None:
    await store.create_namespace("acme")
    secrets = [f"whsec_{i}" + "A" * 40 for i in range(4)]
    results = await asyncio.gather(*(store.put_webhook("acme", "https://example.com/hook", ALL, s) for s in secrets))
    shown = [s for _, s in results if s is not None]
    assert len(shown) == 1 and (await store.get_webhook("acme", with_secret=True)).secret == shown[0]


async def test_deferred_events_come_back_later_unattempted(store: Any) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    _, (a, _b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1)], events=True)
    [event] = await store.claim_webhook_events("w", 30, 10)
    assert await store.defer_webhook_events("other", [event.id], time.time() + 0.2) == 0  # not its lease
    assert await store.defer_webhook_events("w", [event.id], time.time() + 0.2) == 1
    assert await store.claim_webhook_events("w", 30, 10) == []
    await asyncio.sleep(0.25)
    [again] = await store.claim_webhook_events("w", 30, 10)
    assert again.id == event.id and again.attempts == 0


async def test_a_success_ends_the_failure_streak(store: Any) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    _, (a, b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1), DeliveryUpdate(b, "failed", 1)], events=True)
    first, second, third = await store.claim_webhook_events("w", 30, 10)
    await store.finish_webhook_event("w", EventOutcome(first.id, "acme", False, 0, "timeout", 0), disable_after=60)
    await store.finish_webhook_event("w", EventOutcome(second.id, "acme", True, 204), disable_after=60)
    hook = await store.get_webhook("acme")
    assert hook.failures == 0 and not hook.failing_since and hook.last_success_at and hook.last_failure_at


async def test_the_pending_cap_drops_the_oldest_and_retention_prunes(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ("delivery.dead_token",), SECRET)
    ids = []
    for _ in range(3):
        _, (a, _b) = await _leased_send(store)
        await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1)], events=True)
        ids.append(f"msg_{a}.dead_token")
    assert await store.cap_webhook_events(2) == 1
    rows = dict(await backend.fetchall("SELECT id, state FROM webhook_events"))
    assert [rows[i] for i in ids] == ["dropped", "pending", "pending"]  # the oldest went
    assert await store.prune_webhook_events(time.time() + 1) == 3
    assert await _events(backend) == []


async def test_deleting_the_webhook_deletes_its_pending_events(store: Any, backend: Backend) -> None:
    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    _, (a, _b) = await _leased_send(store)
    await store.update_deliveries("w", [DeliveryUpdate(a, "dead", 1)], events=True)
    assert await store.delete_webhook("acme")
    assert await _events(backend) == []


async def test_the_secret_rotates_with_the_master_key(store: Any, backend: Backend) -> None:
    from tests.conftest import TEST_KEY
    from wasmhost.store.rotation import rotate_keys

    await store.create_namespace("acme")
    await store.put_webhook("acme", "https://example.com/hook", ALL, SECRET)
    both = KeyRing({1: TEST_KEY, 2: bytes(32)})
    rotated = await backend.open(both)
    await rotate_keys(rotated, both)
    [(sealed,)] = await backend.fetchall("SELECT secret_sealed FROM webhooks")
    assert sealed.startswith("wh1:2:")
    assert (await rotated.get_webhook("acme", with_secret=True)).secret == SECRET
