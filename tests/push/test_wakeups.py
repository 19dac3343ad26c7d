"""Delivery workers are woken when deliveries become due elsewhere: a send accepted for the workers (or leases
put back) is announced on the store's change feed — NOTIFY on PostgreSQL, in the writing transaction — so an
idle worker on another gateway claims it at once instead of at its next poll."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import OneProviderFactory, RecordingProvider
from tests.store.conftest import Backend, backend  # noqa: F401 (a fixture)
from tests.store.pg import pg_database  # noqa: F401 (a fixture)
from wasmhost.push import Defaults, Manager, PushMessage, QueueSettings
from wasmhost.store import KeyRing
from wasmhost.store.changes import Change
from wasmhost.store.queue import Target

pytestmark = pytest.mark.asyncio

#: Far longer than the test waits: only a wake-up can explain a prompt delivery.
SLOW_POLL = QueueSettings(poll_interval=30.0, lease_seconds=5)


async def test_a_queued_send_on_one_gateway_wakes_the_worker_of_another(backend: Backend,  # noqa: F811
                                                                        keyring: KeyRing) -> None:
    """Two gateways on one PostgreSQL database (or two processes on one SQLite file: its change ring)."""
    store_a = await backend.open(keyring)
    store_b = await backend.open(keyring)
    await store_a.create_namespace("acme")
    await store_a.register_device("acme", "alice", "phone", "p", "tok-phone")
    accepting = RecordingProvider("p")
    delivering = RecordingProvider("p")
    gateway_a = Manager(store_a, OneProviderFactory(accepting), Defaults(), queue=store_a, queue_settings=SLOW_POLL)
    gateway_b = Manager(store_b, OneProviderFactory(delivering), Defaults(), queue=store_b, queue_settings=SLOW_POLL)
    assert gateway_b.queue is not None
    gateway_b.queue.start()  # A runs no worker: only B can deliver
    try:
        await asyncio.sleep(0.3)  # B's worker found nothing and waits for its (30 s) poll
        started = time.monotonic()
        report = await gateway_a.send_to_user("acme", "alice", PushMessage(title="hi"), wait=False)
        assert [r.state for r in report.results] == ["queued"]
        while not delivering.sent:
            assert time.monotonic() - started < 1.0, "gateway B was not woken"
            await asyncio.sleep(0.01)
        elapsed = time.monotonic() - started
    finally:
        await gateway_a.aclose()
        await gateway_b.aclose()
    assert [d.token for d in delivering.sent] == ["tok-phone"] and accepting.sent == []
    print(f"woken and delivered in {elapsed * 1000:.0f} ms (poll interval {SLOW_POLL.poll_interval:.0f} s)")


async def test_deliveries_due_now_are_announced_and_those_delivered_at_once_are_not(
    backend: Backend, keyring: KeyRing  # noqa: F811
) -> None:
    writer = await backend.open(keyring)
    await writer.create_namespace("acme")
    heard: list[Change] = []
    writer.changes.subscribe(heard.append)
    targets = [Target("row-a", "phone", "outbox")]

    def due() -> list[Change]:
        return [c for c in heard if c.kind == "deliveries"]

    await writer.accept_send("acme", "alice", {"title": "hi"}, targets, ttl_seconds=60, lease_owner="me",
                             lease_seconds=30)
    assert due() == []  # its accepting process delivers it: nobody else needs waking
    await writer.accept_send("acme", "alice", {"title": "hi"}, targets, ttl_seconds=60)
    await writer.accept_send("acme", "alice", {"title": "k"}, targets, ttl_seconds=60, idempotency_key="k1")
    assert due() == [Change("acme", "deliveries")] * 2
    assert await writer.release_leases("me") == 1  # a stopping process puts its rows back: due now
    assert len(due()) == 3
    assert await writer.release_leases("me") == 0
    assert len(due()) == 3  # nothing put back, nothing announced


async def test_a_send_too_large_for_one_statement_is_announced_from_its_transaction(
    backend: Backend, keyring: KeyRing  # noqa: F811
) -> None:
    writer = await backend.open(keyring)
    other = await backend.open(keyring)
    await writer.create_namespace("acme")
    heard: list[Change] = []
    other.changes.subscribe(heard.append)
    # 400 rows of 11 values: past one statement's parameters, so the accept is a transaction on PostgreSQL.
    targets = [Target(f"row-{i}", f"device-{i}", "outbox") for i in range(400)]
    await writer.accept_send("acme", "alice", {"title": "many"}, targets, ttl_seconds=60)
    end = time.monotonic() + 2.0
    while Change("acme", "deliveries") not in heard:
        assert time.monotonic() < end, heard
        await asyncio.sleep(0.01)
