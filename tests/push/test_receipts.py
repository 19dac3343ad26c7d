"""Expo receipts are durable: an ``ok`` ticket leaves the delivery ``sent`` with its receipt id in the store,
and the receipt is read by whichever delivery worker runs when it is due — after a restart too (new store and
queue objects on the same database), on SQLite and PostgreSQL. Against the fake Expo on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.store.conftest import Backend, backend  # noqa: F401 (backend is a fixture)
from tests.store.pg import pg_database  # noqa: F401 (a fixture)
from wasmhost.providers import ProviderPool, default_specs
from wasmhost.push import Defaults, Manager, PushMessage, QueueSettings
from wasmhost.push.credentials import validate_credentials
from wasmhost.store import KeyRing
from wasmhost.testing.expo import FakeExpo

pytestmark = pytest.mark.asyncio

OK_TOKEN = "ExponentPushToken[receiptOk1]"
DEAD_TOKEN = "ExponentPushToken[receiptDead1]"
#: Receipts due almost at once; a worker that polls often.
TINY = QueueSettings(receipt_delay=0.2, receipt_retry=0.05, poll_interval=0.05, lease_seconds=5,
                     retry_base=0.05, retry_max=0.1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeExpo]:
    server = FakeExpo()
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


async def _setup(store: Any, fake: FakeExpo, tokens: dict[str, str]) -> None:
    await store.create_namespace("acme")
    spec = next(s for s in default_specs(store, allow_private_endpoints=True) if s.name == "expo")
    await store.put_credentials("acme", "expo", await validate_credentials(spec, {"endpoint": fake.url}))
    for device_id, token in tokens.items():
        await store.register_device("acme", "alice", device_id, "expo", token)


def _manager(store: Any, settings: QueueSettings = TINY) -> Manager:
    return Manager(store, ProviderPool(default_specs(store, allow_private_endpoints=True)), Defaults(),
                   queue=store, queue_settings=settings)


async def _states(store: Any, send_id: str) -> list[tuple[str, str]]:
    return [(d.state, d.reason) for d in (await store.get_send("acme", send_id)).deliveries]


async def _until_completed(store: Any, send_id: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while (await store.get_send("acme", send_id)).state != "completed":
        assert time.monotonic() < end, await _states(store, send_id)
        await asyncio.sleep(0.05)


async def test_receipts_are_read_after_a_restart(backend: Backend, keyring: KeyRing,  # noqa: F811
                                                 fake: FakeExpo) -> None:
    store = await backend.open(keyring)
    await _setup(store, fake, {"ok-phone": OK_TOKEN, "dead-phone": DEAD_TOKEN})
    fake.script[DEAD_TOKEN] = ["receipt_dead"]
    fake.receipt_not_ready_polls = 1  # the first read finds nothing ready: read again later
    manager = _manager(store)
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
    # Both tickets were ok: the deliveries wait for their receipts, nothing is kept in the process.
    assert report.ok and [r.state for r in report.results] == ["sent", "sent"]
    expo = next(p for p in (await manager.dispatcher_for("acme")).providers.values() if p.name == "expo")
    assert expo.pending_receipts == 0  # type: ignore[attr-defined]
    send_id = report.send_id or ""
    await manager.aclose()  # the process stops before any receipt is due
    await store.aclose()
    backend.opened.remove(store)
    assert fake.receipt_requests == []

    store = await backend.open(keyring)  # a new process on the same database
    assert [s for s, _ in await _states(store, send_id)] == ["sent", "sent"]
    assert (await store.get_send("acme", send_id)).state == "pending"
    manager = _manager(store)
    assert manager.queue is not None
    manager.queue.start()
    try:
        await _until_completed(store, send_id)
    finally:
        await manager.aclose()
    status = await store.get_send("acme", send_id)
    by_device = {d.device_id: d for d in status.deliveries}
    assert by_device["ok-phone"].state == "delivered"
    assert (by_device["dead-phone"].state, by_device["dead-phone"].reason) == ("dead", "DeviceNotRegistered")
    assert [d.device_id for d in await store.list_user_devices("acme", "alice")] == ["ok-phone"]  # pruned
    assert len(fake.receipt_requests) >= 2 and len(fake.delivered) == 2  # read twice, sent once


async def test_another_receipt_error_fails_and_a_rate_error_sends_again(sqlite_store: Any, fake: FakeExpo) -> None:
    await _setup(sqlite_store, fake, {"big": "ExponentPushToken[big1]", "busy": "ExponentPushToken[busy1]"})
    fake.script["ExponentPushToken[big1]"] = ["receipt_toobig"]
    fake.script["ExponentPushToken[busy1]"] = ["receipt_rate", "ok"]  # too frequent: back off, send again
    manager = _manager(sqlite_store)
    assert manager.queue is not None
    try:
        report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
        manager.queue.start()
        await _until_completed(sqlite_store, report.send_id or "")
    finally:
        await manager.aclose()
    status = await sqlite_store.get_send("acme", report.send_id or "")
    by_device = {d.device_id: d for d in status.deliveries}
    assert (by_device["big"].state, by_device["big"].reason) == ("failed", "MessageTooBig")
    assert by_device["big"].error  # Expo's message, for the tenant
    assert by_device["busy"].state == "delivered" and by_device["busy"].attempts == 2
    assert [m["to"] for m in fake.delivered].count("ExponentPushToken[busy1]") == 2


async def test_a_receipt_never_ready_ends_failed_when_expo_would_have_dropped_it(sqlite_store: Any,
                                                                                 fake: FakeExpo) -> None:
    await _setup(sqlite_store, fake, {"phone": OK_TOKEN})
    fake.receipt_not_ready_polls = 10_000
    settings = QueueSettings(receipt_delay=0.0, receipt_retry=0.05, receipt_window=0.3, lease_seconds=5)
    manager = _manager(sqlite_store, settings)
    assert manager.queue is not None
    try:
        report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
        await manager.queue.flush()
        assert await manager.queue.receipts_once() == 1
        assert await _states(sqlite_store, report.send_id or "") == [("sent", "")]  # not ready: asked again later
        assert await manager.queue.receipts_once() == 0  # not due yet
        await asyncio.sleep(0.35)
        assert await manager.queue.receipts_once() == 1
    finally:
        await manager.aclose()
    status = await sqlite_store.get_send("acme", report.send_id or "")
    assert status.state == "completed" and [(d.state, d.reason) for d in status.deliveries] == [
        ("failed", "ReceiptUnavailable")]
    assert len(fake.delivered) == 1  # an ok ticket is never sent again
