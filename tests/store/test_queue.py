"""The durable delivery queue's store contract, on SQLite and PostgreSQL: one transaction per accept,
leases that exclude each other and expire, owner-checked updates, idempotency keys, namespaced reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.store.conftest import Backend
from wasmhost.store import KeyRing, NotFound
from wasmhost.store.queue import DeliveryUpdate, IdempotencyConflict, Target

pytestmark = pytest.mark.asyncio

MSG = {"title": "hi"}
TARGETS = [Target("row-a", "phone", "outbox"), Target("row-b", "tablet", "outbox")]


async def _setup(store: Any) -> None:
    await store.create_namespace("acme")
    await store.create_namespace("other")


async def test_accept_commits_the_send_and_one_row_per_device(store: Any, backend: Backend) -> None:
    await _setup(store)
    accepted = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60)
    assert accepted.created and len(accepted.delivery_ids) == 2
    rows = await backend.fetchall("SELECT device_id, state FROM deliveries WHERE send_id = ? ORDER BY id",
                                  accepted.send_id)
    assert rows == [("phone", "queued"), ("tablet", "queued")]
    status = await store.get_send("acme", accepted.send_id)
    assert status.state == "pending" and status.message == MSG and status.counts()["queued"] == 2


async def test_another_namespaces_send_is_not_found(store: Any) -> None:
    await _setup(store)
    accepted = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60)
    with pytest.raises(NotFound):
        await store.get_send("other", accepted.send_id)
    assert await store.list_sends("other") == []


async def test_a_failed_accept_writes_nothing(store: Any, backend: Backend) -> None:
    with pytest.raises(NotFound):
        await store.accept_send("nope", "alice", MSG, TARGETS, ttl_seconds=60)
    assert await backend.fetchall("SELECT id FROM deliveries") == []


async def test_claims_lease_rows_once_until_the_lease_expires(store: Any) -> None:
    await _setup(store)
    await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60)
    first = await store.claim_deliveries("w1", 0.3, 10)
    assert {c.device_id for c in first} == {"phone", "tablet"} and first[0].message_json
    assert await store.claim_deliveries("w2", 0.3, 10) == []  # held
    await asyncio.sleep(0.4)
    taken = await store.claim_deliveries("w2", 30, 10)  # w1 "crashed": its lease ran out
    assert {c.id for c in taken} == {c.id for c in first}
    # w1's late result must not overwrite w2's lease
    await store.update_deliveries("w1", [DeliveryUpdate(first[0].id, "delivered")])
    status = (await store.list_sends("acme"))[0]
    assert {d.state for d in status.deliveries} == {"sending"}
    await store.update_deliveries("w2", [DeliveryUpdate(c.id, "delivered", 1, 200) for c in taken])
    status = (await store.list_sends("acme"))[0]
    assert status.state == "completed" and [d.attempts for d in status.deliveries] == [1, 1]


async def test_queued_rows_wait_for_their_next_attempt(store: Any) -> None:
    await _setup(store)
    import time

    accepted = await store.accept_send("acme", "alice", MSG, TARGETS[:1], ttl_seconds=60, lease_owner="me",
                                       lease_seconds=60)
    [row_id] = accepted.delivery_ids.values()
    assert await store.claim_deliveries("w", 30, 10) == []  # leased by its accepting process
    await store.update_deliveries("me", [DeliveryUpdate(row_id, "queued", 1, 503, "Unavailable", "",
                                                        time.time() + 0.3)])
    assert await store.claim_deliveries("w", 30, 10) == []
    await asyncio.sleep(0.4)
    assert [c.id for c in await store.claim_deliveries("w", 30, 10)] == [row_id]


async def test_concurrent_claimers_never_share_a_row(backend: Backend, keyring: KeyRing) -> None:
    a = await backend.open(keyring)
    b = await backend.open(keyring)
    await _setup(a)
    for i in range(30):
        await a.accept_send("acme", f"u{i}", MSG, TARGETS, ttl_seconds=60)
    got = await asyncio.gather(*(s.claim_deliveries(f"w{i}", 60, 7) for i, s in enumerate([a, b] * 6)))
    ids = [c.id for batch in got for c in batch]
    assert len(ids) == len(set(ids)) == 60


async def test_the_same_idempotency_key_returns_the_first_send(store: Any, backend: Backend) -> None:
    await _setup(store)
    first = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k1")
    again = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k1")
    assert first.created and not again.created and again.send_id == first.send_id
    with pytest.raises(IdempotencyConflict):
        await store.accept_send("acme", "alice", {"title": "other"}, TARGETS, ttl_seconds=60, idempotency_key="k1")
    other_ns = await store.accept_send("other", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k1")
    assert other_ns.created
    assert len(await backend.fetchall("SELECT id FROM sends")) == 2


async def test_a_key_older_than_a_day_names_a_new_send(store: Any, backend: Backend) -> None:
    await _setup(store)
    first = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k1")
    await backend.execute("UPDATE sends SET created_at = created_at - 90000 WHERE id = ?", first.send_id)
    again = await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k1")
    assert again.created and again.send_id != first.send_id


async def test_listing_pages_newest_first_and_filters(store: Any) -> None:
    await _setup(store)
    ids = [(await store.accept_send("acme", "alice" if i % 2 else "bob", MSG, TARGETS, ttl_seconds=60)).send_id
           for i in range(5)]
    page = await store.list_sends("acme", limit=2)
    assert [s.id for s in page] == ids[::-1][:2]
    rest = await store.list_sends("acme", limit=10, before=(page[-1].created_at, page[-1].id))
    assert [s.id for s in rest] == ids[::-1][2:]
    assert {s.user_id for s in await store.list_sends("acme", user_id="alice")} == {"alice"}
    assert await store.list_sends("acme", state="completed") == []
    assert await store.queued_in_namespace("acme") == 10


async def test_pruning_keeps_what_is_unfinished(store: Any, backend: Backend) -> None:
    await _setup(store)
    done = await store.accept_send("acme", "alice", MSG, TARGETS[:1], ttl_seconds=60, lease_owner="me",
                                   lease_seconds=60)
    await store.update_deliveries("me", [DeliveryUpdate(i, "delivered") for i in done.delivery_ids.values()])
    await store.accept_send("acme", "bob", MSG, TARGETS[:1], ttl_seconds=60)
    import time

    assert await store.prune_sends(time.time() + 1) == 1
    assert [s.user_id for s in await store.list_sends("acme")] == ["bob"]
    assert len(await backend.fetchall("SELECT id FROM deliveries")) == 1


async def test_sent_deliveries_wait_for_their_receipt_under_a_lease(store: Any) -> None:
    await _setup(store)
    accepted = await store.accept_send("acme", "alice", MSG, TARGETS[:1], ttl_seconds=60, lease_owner="fast",
                                       lease_seconds=30)
    [delivery_id] = accepted.delivery_ids.values()
    sent_at = 1_000.0
    await store.update_deliveries("fast", [DeliveryUpdate(delivery_id, "sent", 1, 200, next_attempt_at=0.0,
                                                          receipt_id="rcpt-1", receipt_at=sent_at)])
    assert await store.claim_deliveries("w1", 30, 10) == []  # the service has it: never sent again
    status = await store.get_send("acme", accepted.send_id)
    assert status.state == "pending" and status.counts()["sent"] == 1
    assert await store.queued_in_namespace("acme") == 0 and (await store.queue_stats())["depth"] == 0
    [claimed] = await store.claim_receipts("w1", 0.3, 10)
    assert (claimed.id, claimed.receipt_id, claimed.receipt_at) == (delivery_id, "rcpt-1", sent_at)
    assert await store.claim_receipts("w2", 30, 10) == []  # held
    await asyncio.sleep(0.4)
    [taken] = await store.claim_receipts("w2", 30, 10)  # w1 "crashed": its lease ran out
    assert taken.id == delivery_id
    await store.update_deliveries("w1", [DeliveryUpdate(delivery_id, "failed", 0, reason="Late")])  # w1 is late
    await store.update_deliveries("w2", [DeliveryUpdate(delivery_id, "delivered", 0, 200)])
    [d] = (await store.get_send("acme", accepted.send_id)).deliveries
    assert (d.state, d.reason, d.attempts) == ("delivered", "", 1)
    assert await store.claim_receipts("w3", 30, 10) == []


# Sends {"title":"hi","message_id":"m1"} to alice, then the same id with another title; outputs both codes.
SAME_ID_TWICE = """(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $out (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alice")
  (data (i32.const 64) "{\\"title\\":\\"hi\\",\\"message_id\\":\\"m1\\"}")
  (data (i32.const 128) "{\\"title\\":\\"no\\",\\"message_id\\":\\"m1\\"}")
  (func (export "handle") (result i32)
    (i32.store (i32.const 256) (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 32)))
    (i32.store (i32.const 260) (call $send (i32.const 16) (i32.const 5) (i32.const 128) (i32.const 32)))
    (drop (call $out (i32.const 256) (i32.const 8)))
    (i32.const 0)))"""


@pytest.mark.parametrize("executor", ["auto", "threads"])
async def test_a_guests_ticket_is_a_committed_send_and_a_refusal_answers_the_call(
    store: Any, backend: Backend, executor: str
) -> None:
    """Through the real runtime and manager: on PostgreSQL every accept waits for the database, so the guest
    is suspended in push_send_to_user (or its thread blocked) until the commit."""
    import struct

    from tests.conftest import OneProviderFactory, RecordingProvider
    from wasmhost.push import Defaults, Manager
    from wasmhost.runtime import INVAL, Runtime

    await _setup(store)
    await store.register_device("acme", "alice", "phone", "p", "tok-phone")
    provider = RecordingProvider("p")
    manager = Manager(store, OneProviderFactory(provider), Defaults(), queue=store)
    runtime = Runtime(manager, executor=executor)  # type: ignore[arg-type]
    try:
        result = await runtime.invoke("acme", SAME_ID_TWICE)
        assert result.ok, result.error
        assert list(struct.unpack("<2i", result.output_bytes)) == [1, INVAL]
        assert any("different message" in e.message for e in result.logs)  # the [host] line says why
        [sent] = result.sends
        assert sent["ok"] and len(provider.sent) == 1  # the first send, once; the refused one never
        rows = await backend.fetchall("SELECT id FROM sends WHERE namespace = ?", "acme")
        assert [r[0] for r in rows] == [sent["send_id"]]
    finally:
        await runtime.aclose()
        await manager.aclose()


async def test_every_queue_read_finds_its_rows_through_an_index_on_sqlite(tmp_path: Any, keyring: KeyRing) -> None:
    """The queue's indexes are partial (migration 8): SQLite uses one only when the query repeats its
    condition word for word, and otherwise scans every delivery ever kept. Each statement the queue
    runs here is planned again, and none may scan the deliveries or sends tables themselves."""
    import sqlite3

    from wasmhost.store import SQLiteStore

    store = await SQLiteStore(tmp_path / "plans.db", keyring).open()
    seen: list[str] = []
    try:
        await _setup(store)
        assert store.driver.loop_db is not None
        store.driver.loop_db.conn.set_trace_callback(seen.append)
        await store.driver.db.set_trace_callback(seen.append)
        await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60)
        await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k")
        await store.accept_send("acme", "alice", MSG, TARGETS, ttl_seconds=60, idempotency_key="k")
        claimed = await store.claim_deliveries("w1", 30, 10)
        await store.update_deliveries("w1", [DeliveryUpdate(claimed[0].id, "sent", 1, 200, next_attempt_at=0,
                                                            receipt_id="r", receipt_at=1)])
        await store.claim_receipts("w1", 30, 10)
        await store.queued_in_namespace("acme")
        await store.queue_stats()
        await store.list_sends("acme", state="pending")
        await store.list_sends("acme", state="completed", user_id="alice")
        await store.release_leases("w1")
        await store.prune_sends(0)
    finally:
        await store.aclose()
    queries = {s for s in seen if "deliveries" in s or "sends" in s}
    assert any("'queued'" in q for q in queries) and any("state = 'sent'" in q for q in queries)
    with sqlite3.connect(tmp_path / "plans.db") as db:
        for sql in queries:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
            scans = [p for p in plan if p.startswith("SCAN") and "INDEX" not in p]
            assert not scans, (sql, plan)
