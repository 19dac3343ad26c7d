"""Durable delivery through the real manager and SQLite store: accepted before delivery, each device's
state recorded, transient failures retried by the worker with backoff until the TTL, idempotent repeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import OneProviderFactory, RecordingProvider, dead
from wasmhost.push import Defaults, Manager, PushMessage, QueueSettings, SendConflict
from wasmhost.push.provider import FailureKind, Outcome
from wasmhost.store import NotFound, SQLiteStore

pytestmark = pytest.mark.asyncio

FAST = QueueSettings(retry_base=0.05, retry_max=0.1, poll_interval=0.05, lease_seconds=5)


def transient(retry_after: float | None = None) -> Outcome:
    return Outcome.failed(FailureKind.TRANSIENT, "Unavailable", status=503, retry_after=retry_after)


async def _manager(store: SQLiteStore, provider: RecordingProvider, settings: QueueSettings = FAST) -> Manager:
    await store.create_namespace("acme")
    await store.register_device("acme", "alice", "phone", "p", "tok-phone")
    await store.register_device("acme", "alice", "tablet", "p", "tok-tablet")
    from wasmhost.push.dispatcher import RetryPolicy

    return Manager(store, OneProviderFactory(provider), Defaults(), queue=store, queue_settings=settings,
                   retry=RetryPolicy(max_attempts=1))


async def _until(check: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_a_delivered_send_is_recorded_with_its_id(sqlite_store: SQLiteStore) -> None:
    manager = await _manager(sqlite_store, RecordingProvider("p"))
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
    assert report.ok and report.send_id
    assert [r.state for r in report.results] == ["delivered", "delivered"]
    assert manager.queue is not None
    await manager.queue.flush()
    status = await sqlite_store.get_send("acme", report.send_id)
    assert status.state == "completed" and [d.state for d in status.deliveries] == ["delivered", "delivered"]
    await manager.aclose()


async def test_transient_failures_stay_queued_and_the_worker_retries_them(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", [transient(), Outcome.ok(), transient()])
    manager = await _manager(sqlite_store, provider)
    assert manager.queue is not None
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
    assert not report.ok and [r.state for r in report.results] == ["queued", "delivered"]
    manager.queue.start()

    async def done() -> bool:
        await manager.queue.flush()  # type: ignore[union-attr]
        return (await sqlite_store.get_send("acme", report.send_id or "")).state == "completed"

    await _until(done)
    status = await sqlite_store.get_send("acme", report.send_id or "")
    phone = status.deliveries[0]
    assert phone.state == "delivered" and phone.attempts == 3  # failed twice, then delivered
    assert [d.token for d in provider.sent].count("tok-tablet") == 1  # never delivered twice
    await manager.aclose()


async def test_retry_after_is_honoured_and_ttl_ends_in_expired(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", [transient(retry_after=30)] * 2)
    manager = await _manager(sqlite_store, provider)
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi", ttl_seconds=5))
    # Retry-After (30 s) reaches past the TTL (5 s): nothing more will be attempted.
    assert [r.state for r in report.results] == ["expired", "expired"]
    await manager.queue.flush()  # type: ignore[union-attr]
    assert (await sqlite_store.get_send("acme", report.send_id or "")).state == "completed"
    await manager.aclose()


async def test_nothing_is_delivered_after_its_ttl(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", [transient(), transient()])
    manager = await _manager(sqlite_store, provider, QueueSettings(retry_base=0.01, retry_max=0.01,
                                                                    poll_interval=0.05))
    assert manager.queue is not None
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi", ttl_seconds=1))
    assert [r.state for r in report.results] == ["queued", "queued"]
    await manager.queue.flush()
    await asyncio.sleep(1.1)
    assert await manager.queue.claim_once() == 2
    status = await sqlite_store.get_send("acme", report.send_id or "")
    assert [d.state for d in status.deliveries] == ["expired", "expired"]
    assert len(provider.sent) == 2  # only the first attempts
    await manager.aclose()


async def test_dead_tokens_and_permanent_failures_are_final(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", [dead(), Outcome.failed(FailureKind.PERMANENT, "BadRequest", status=400)])
    manager = await _manager(sqlite_store, provider)
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
    assert [r.state for r in report.results] == ["dead", "failed"]
    await manager.queue.flush()  # type: ignore[union-attr]
    status = await sqlite_store.get_send("acme", report.send_id or "")
    assert status.state == "completed" and status.deliveries[1].reason == "BadRequest"
    await manager.aclose()


async def test_the_same_message_id_never_delivers_twice(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p")
    manager = await _manager(sqlite_store, provider)
    message = PushMessage(title="hi", message_id="order-42")
    first = await manager.send_to_user("acme", "alice", message)
    again = await manager.send_to_user("acme", "alice", message)
    assert again.send_id == first.send_id and [r.state for r in again.results] == ["delivered", "delivered"]
    assert len(provider.sent) == 2
    with pytest.raises(SendConflict):
        await manager.send_to_user("acme", "alice", PushMessage(title="changed", message_id="order-42"))
    header = await manager.send_to_user("acme", "alice", PushMessage(title="x"), idempotency_key="k")
    assert (await manager.send_to_user("acme", "alice", PushMessage(title="x"), idempotency_key="k")).send_id \
        == header.send_id
    await manager.aclose()


async def test_wait_0_only_queues_and_the_worker_delivers(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p")
    manager = await _manager(sqlite_store, provider)
    assert manager.queue is not None
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"), wait=False)
    assert provider.sent == [] and [r.state for r in report.results] == ["queued", "queued"]
    assert await manager.queue.claim_once() == 2
    assert (await sqlite_store.get_send("acme", report.send_id or "")).state == "completed"
    await manager.aclose()


async def test_the_namespace_queue_cap_refuses_a_send(sqlite_store: SQLiteStore) -> None:
    from wasmhost.push import QueueFull

    provider = RecordingProvider("p")
    manager = await _manager(sqlite_store, provider, QueueSettings(max_queued=3))
    await manager.send_to_user("acme", "alice", PushMessage(title="1"), wait=False)
    with pytest.raises(QueueFull):
        await manager.send_to_user("acme", "alice", PushMessage(title="2"), wait=False)
    await manager.aclose()


async def test_finished_sends_past_the_retention_are_pruned(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", [transient(), Outcome.ok()])
    manager = await _manager(sqlite_store, provider, QueueSettings(retention=0.2, retry_base=60, retry_max=60))
    assert manager.queue is not None
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))  # phone queued, tablet delivered
    done = await manager.send_to_user("acme", "bob", PushMessage(title="hi"))  # no devices: completed
    await manager.queue.flush()
    await asyncio.sleep(0.3)
    assert await manager.queue.prune() == 1
    assert (await sqlite_store.get_send("acme", report.send_id or "")).state == "pending"  # kept: unfinished
    with pytest.raises(NotFound):
        await sqlite_store.get_send("acme", done.send_id or "")
    await manager.aclose()


async def _outbox_manager(store: SQLiteStore) -> Manager:
    from wasmhost.providers import ProviderPool, default_specs

    await store.create_namespace("acme")
    await store.register_device("acme", "alice", "phone", "outbox", "tok-phone")
    await store.register_device("acme", "alice", "tablet", "outbox", "tok-tablet")
    return Manager(store, ProviderPool(default_specs(store)), Defaults(credentials={"outbox": {}}), queue=store,
                   queue_settings=FAST)


async def test_the_outbox_delivers_in_the_accepts_own_commit(sqlite_store: SQLiteStore) -> None:
    manager = await _outbox_manager(sqlite_store)
    loop_db = sqlite_store.driver.loop_db
    assert loop_db is not None and manager.queue is not None
    await manager.send_to_user("acme", "alice", PushMessage(title="warm"))  # builds the dispatcher
    await manager.queue.flush()
    before = loop_db._commits
    report = await manager.send_to_user("acme", "alice", PushMessage(title="hi"))
    assert report.ok and [r.state for r in report.results] == ["delivered", "delivered"]
    await manager.queue.flush()
    assert loop_db._commits - before == 1  # the send, both deliveries and both outbox records: one commit
    status = await sqlite_store.get_send("acme", report.send_id or "")
    assert status.state == "completed" and [(d.state, d.attempts) for d in status.deliveries] == [
        ("delivered", 1), ("delivered", 1)]
    assert [r.message["title"] for r in await sqlite_store.list_deliveries("acme")] == ["warm"] * 2 + ["hi"] * 2
    await manager.aclose()


async def test_an_outbox_send_whose_accept_fails_records_nothing(sqlite_store: SQLiteStore) -> None:
    manager = await _outbox_manager(sqlite_store)
    await manager.send_to_user("acme", "alice", PushMessage(title="hi", message_id="m1"))
    with pytest.raises(SendConflict):  # refused by the accept: nothing delivered
        await manager.send_to_user("acme", "alice", PushMessage(title="other", message_id="m1"))
    again = await manager.send_to_user("acme", "alice", PushMessage(title="hi", message_id="m1"))
    assert again.ok  # the original send's report; delivered once, not again
    assert len(await sqlite_store.list_deliveries("acme")) == 2
    await manager.aclose()


async def test_the_worker_delivers_a_batch_of_outbox_rows_in_one_commit(sqlite_store: SQLiteStore) -> None:
    manager = await _outbox_manager(sqlite_store)
    loop_db = sqlite_store.driver.loop_db
    assert loop_db is not None and manager.queue is not None
    sends = [await manager.send_to_user("acme", "alice", PushMessage(title=f"m{i}"), wait=False) for i in range(10)]
    before = loop_db._commits
    assert await manager.queue.claim_once() == 20
    assert loop_db._commits - before == 1  # 20 records and their 20 states: one transaction
    for report in sends:
        status = await sqlite_store.get_send("acme", report.send_id or "")
        assert status.state == "completed" and {(d.state, d.attempts) for d in status.deliveries} == {("delivered", 1)}
    assert sorted(r.message["title"] for r in await sqlite_store.list_deliveries("acme")) == sorted(
        f"m{i}" for i in range(10) for _ in range(2))
    assert await manager.queue.claim_once() == 0  # nothing left leased or queued: delivered exactly once
    await manager.aclose()


async def test_accept_commits_before_anything_is_delivered(sqlite_store: SQLiteStore) -> None:
    provider = RecordingProvider("p", delay=0.3)
    manager = await _manager(sqlite_store, provider)
    accepted = await manager.accept("acme", "alice", PushMessage(title="hi"))
    assert accepted.report is None and provider.sent == []  # accepted, not yet delivered
    [stored] = await sqlite_store.list_sends("acme", user_id="alice")  # committed by then
    assert stored.id == accepted.send_id and [d.state for d in stored.deliveries] == ["sending", "sending"]
    report = await accepted.deliver()
    assert report.ok and report.send_id == accepted.send_id and len(provider.sent) == 2
    await manager.send_to_user("acme", "alice", PushMessage(title="hi", message_id="m1"))
    with pytest.raises(SendConflict):  # refused by the accept: nothing stored, nothing to deliver
        await manager.accept("acme", "alice", PushMessage(title="other", message_id="m1"))
    assert len(await sqlite_store.list_sends("acme", user_id="alice")) == 2
    await manager.aclose()


class Gated(RecordingProvider):
    """Holds every delivery to namespace ``acme`` until `release` is set; counts them in flight."""

    def __init__(self) -> None:
        super().__init__("p")
        self.release = asyncio.Event()
        self.in_flight = self.most_in_flight = 0

    async def send(self, deliveries: Any) -> list[Outcome]:
        if deliveries[0].namespace == "acme":
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
        return await super().send(deliveries)


async def test_the_worker_delivers_a_namespace_in_bounded_lanes_and_a_slow_one_holds_only_its_own(
    sqlite_store: SQLiteStore,
) -> None:
    from wasmhost.push.delivery import LANES_PER_NAMESPACE

    provider = Gated()
    manager = await _manager(sqlite_store, provider, QueueSettings(poll_interval=0.05, lease_seconds=30, batch=500))
    await sqlite_store.create_namespace("beta")
    await sqlite_store.register_device("beta", "bob", "phone", "p", "tok-bob")
    assert manager.queue is not None
    for i in range(100):  # 200 deliveries, all held
        await manager.send_to_user("acme", "alice", PushMessage(title=f"slow-{i}"), wait=False)
    for i in range(10):
        await manager.send_to_user("beta", "bob", PushMessage(title=f"fast-{i}"), wait=False)
    manager.queue.start()

    async def fast_done() -> bool:
        return sum(1 for d in provider.sent if d.namespace == "beta") == 10

    await _until(fast_done, timeout=5)  # while every lane of acme waits on its provider
    # Two devices per send: a lane holds two deliveries; not one parked task per claimed send.
    assert provider.most_in_flight == 2 * LANES_PER_NAMESPACE
    provider.release.set()

    async def all_done() -> bool:
        return sum(1 for d in provider.sent if d.namespace == "acme") == 200

    await _until(all_done, timeout=10)
    await manager.aclose()


async def test_a_claimed_send_that_waited_an_attempts_time_for_a_lane_is_given_back(sqlite_store: SQLiteStore) -> None:
    provider = Gated()
    settings = QueueSettings(poll_interval=0.05, lease_seconds=30, batch=500, attempt_timeout=0.3,
                             retry_base=0.05, retry_max=0.1)
    manager = await _manager(sqlite_store, provider, settings)
    assert manager.queue is not None
    for i in range(100):  # more than the lanes can start within one attempt's time
        await manager.send_to_user("acme", "alice", PushMessage(title=f"slow-{i}"), wait=False)
    manager.queue.start()

    async def states() -> list[tuple[str, int]]:
        await manager.queue.flush()  # type: ignore[union-attr]
        sends = await sqlite_store.list_sends("acme", user_id="alice", limit=100)
        return [(d.state, d.attempts) for s in sends for d in s.deliveries]

    async def all_claimed() -> bool:
        return all(state == "sending" for state, _ in await states())

    async def given_back() -> bool:  # queued again without an attempt: not held under this worker's lease
        return ("queued", 0) in await states()

    await _until(all_claimed, timeout=5)
    await _until(given_back, timeout=5)
    provider.release.set()

    async def all_delivered() -> bool:
        return all(state == "delivered" for state, _ in await states())

    await _until(all_delivered, timeout=15)
    assert len(provider.sent) == 200  # every delivery exactly once
    await manager.aclose()


async def test_a_worker_holds_at_most_batch_deliveries_however_many_devices_a_send_has(
    sqlite_store: SQLiteStore,
) -> None:
    """`batch` bounds deliveries (rows under this worker's lease), not sends: counted as sends, a user's 32
    devices let one worker hold 32 times its batch."""
    provider = Gated()
    manager = await _manager(sqlite_store, provider, QueueSettings(poll_interval=0.02, lease_seconds=30, batch=3))
    assert manager.queue is not None
    for i in range(5):  # two devices each: 10 deliveries, all held
        await manager.send_to_user("acme", "alice", PushMessage(title=f"held-{i}"), wait=False)
    manager.queue.start()

    async def leased() -> int:
        sends = await sqlite_store.list_sends("acme", user_id="alice", limit=10)
        return sum(d.state == "sending" for s in sends for d in s.deliveries)

    async def claimed() -> bool:
        return provider.in_flight > 0 and await leased() > 0

    await _until(claimed, timeout=5)
    await asyncio.sleep(0.2)  # ten polls: room for more claims, had the worker miscounted
    assert await leased() == 3
    provider.release.set()

    async def all_done() -> bool:
        return len(provider.sent) == 10

    await _until(all_done, timeout=10)
    await manager.aclose()
