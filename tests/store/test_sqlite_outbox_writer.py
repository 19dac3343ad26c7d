"""The SQLite send-path writes: committed on the loop thread when that cannot wait, otherwise in a group
with every other write waiting then (`_GroupWriter`, its own thread), one transaction per send, and
never reported written before its COMMIT."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from wasmhost.store import KeyRing, SQLiteStore, StoreError
from wasmhost.store import sqlite as sqlite_mod

MSG = {"title": "hi"}


async def _open(path: Path, keyring: KeyRing) -> SQLiteStore:
    store = await SQLiteStore(path, keyring).open()
    if not await store.namespace_exists("acme"):
        await store.create_namespace("acme")
    return store


def _count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.fixture
async def store(tmp_path: Path, keyring: KeyRing) -> Any:
    s = await _open(tmp_path / "w.db", keyring)
    try:
        yield s
    finally:
        await s.aclose()


def _spy_thread_path(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    writer = store.driver._writer
    assert writer is not None
    original = writer.commit

    async def spy(steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        calls.append(sum(len(rows) for _, rows in steps))
        await original(steps)

    monkeypatch.setattr(writer, "commit", spy)
    return calls


async def test_a_delivery_is_committed_on_the_loop_thread(store: SQLiteStore, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    thread_path = _spy_thread_path(store, monkeypatch)
    await store.record_delivery("acme", "alice", "phone", MSG)
    assert thread_path == []
    assert _count(tmp_path / "w.db") == 1  # visible to another connection: committed
    [rec] = await store.list_deliveries("acme")
    assert rec.message == MSG and rec.device_id == "phone"


async def test_a_sends_rows_are_one_commit_made_before_it_returns(store: SQLiteStore, tmp_path: Path) -> None:
    writer = store.driver.loop_db
    assert writer is not None
    before = writer._commits
    write = store.record_deliveries("acme", [("alice", f"d{i}", MSG) for i in range(50)])
    await write  # completes without yielding to the loop: nothing waits for a later turn
    assert writer._commits - before == 1
    assert _count(tmp_path / "w.db") == 50


async def test_refused_rows_commit_none(store: SQLiteStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="outbox write failed"):
        await store.record_deliveries("no-such-namespace", [("alice", f"d{i}", MSG) for i in range(3)])
    assert _count(tmp_path / "w.db") == 0


async def test_the_outbox_provider_records_a_fan_out_as_one_transaction(store: SQLiteStore) -> None:
    from wasmhost.providers.outbox import OutboxProvider
    from wasmhost.push.message import PushMessage
    from wasmhost.push.provider import Delivery

    writer = store.driver.loop_db
    assert writer is not None
    before = writer._commits
    message = PushMessage(title="hi")
    deliveries = [Delivery("acme", "alice", f"d{i}", f"row{i}", f"tok{i}", message, 0.0) for i in range(20)]
    outcomes = await OutboxProvider(store).send(deliveries)
    assert [o.success for o in outcomes] == [True] * 20
    assert writer._commits - before == 1
    assert [r.device_id for r in await store.list_deliveries("acme")] == [f"d{i}" for i in range(20)]


async def test_a_held_write_lock_sends_the_row_through_the_thread_without_blocking_the_loop(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_path = _spy_thread_path(store, monkeypatch)
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process or tool holds the write lock
    try:
        write = asyncio.ensure_future(store.record_delivery("acme", "alice", "phone", MSG))
        for _ in range(20):  # the loop keeps running while the write waits on aiosqlite's thread
            await asyncio.sleep(0.005)
        assert not write.done() and thread_path
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(write, 10)
    assert _count(tmp_path / "w.db") == 1


async def test_writes_that_find_the_file_locked_commit_together_and_fail_alone(
    store: SQLiteStore, tmp_path: Path
) -> None:
    writer = store.driver._writer
    assert writer is not None
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: no write can run on the loop
    try:
        first = asyncio.ensure_future(store.record_delivery("acme", "alice", "first", MSG))
        await asyncio.sleep(0.02)  # the first group is now waiting for the lock on the writer's thread
        rest = [asyncio.ensure_future(store.record_delivery("acme", "alice", f"d{i}", MSG)) for i in range(5)]
        bad = asyncio.ensure_future(store.record_delivery("no-such-namespace", "alice", "x", MSG))
        await asyncio.sleep(0.02)
        assert not first.done() and not any(w.done() for w in rest)
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    with pytest.raises(StoreError, match="outbox write failed"):
        await bad  # its rows alone were refused: the others in its transaction are committed
    assert writer.groups == 2 and writer.writes == 7
    assert sorted(r.device_id for r in await store.list_deliveries("acme")) == ["d0", "d1", "d2", "d3", "d4", "first"]


async def test_slow_commits_turn_the_loop_path_off(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    thread_path = _spy_thread_path(store, monkeypatch)
    monkeypatch.setattr(sqlite_mod, "LOOP_WRITE_BUDGET", -1.0)  # every commit counts as slow
    for i in range(sqlite_mod.LOOP_WRITE_STRIKES):
        await store.record_delivery("acme", "alice", f"d{i}", MSG)
        await asyncio.sleep(0)
    assert thread_path == []
    await store.record_delivery("acme", "alice", "later", MSG)
    assert len(thread_path) == 1
    assert [r.device_id for r in await store.list_deliveries("acme")][-1] == "later"


async def test_one_slow_commit_alone_does_not(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = store.driver.loop_db
    assert writer is not None
    monkeypatch.setattr(sqlite_mod, "LOOP_WRITE_BUDGET", -1.0)
    await store.record_delivery("acme", "alice", "slow", MSG)
    monkeypatch.setattr(sqlite_mod, "LOOP_WRITE_BUDGET", 3600.0)
    await asyncio.sleep(0)
    await store.record_delivery("acme", "alice", "fast", MSG)
    assert writer.usable()


async def test_checkpoints_run_off_the_loop(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = store.driver.loop_db
    assert writer is not None
    monkeypatch.setattr(sqlite_mod, "CHECKPOINT_EVERY", 3)
    ran: list[bool] = []
    original = writer._run_checkpoint

    def spy() -> None:
        import threading

        ran.append(threading.current_thread() is not threading.main_thread())
        original()

    monkeypatch.setattr(writer, "_run_checkpoint", spy)
    for i in range(3):
        await store.record_delivery("acme", "alice", f"d{i}", MSG)
        await asyncio.sleep(0)
    assert writer._checkpoint is not None
    await asyncio.wait_for(asyncio.shield(writer._checkpoint), 10)
    assert ran == [True]


async def test_failures_are_store_errors(store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match="outbox write failed"):
        await store.record_delivery("no-such-namespace", "alice", "phone", MSG)


async def test_in_memory_store_uses_the_thread(keyring: KeyRing) -> None:
    store = await SQLiteStore(":memory:", keyring).open()
    try:
        await store.create_namespace("acme")
        await store.record_delivery("acme", "alice", "phone", MSG)
        assert store.driver.loop_db is None and len(await store.list_deliveries("acme")) == 1
    finally:
        await store.aclose()


async def test_a_writer_that_fails_outside_sqlite_answers_every_caller(store: SQLiteStore, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = store.driver._writer
    assert writer is not None

    def broken(group: Any) -> Any:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(writer, "_commit_group", broken)
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the loop path is busy: both writes go to the writer
    try:
        writes = [asyncio.ensure_future(store.record_delivery("acme", "alice", f"d{i}", MSG)) for i in range(2)]
        done, pending = await asyncio.wait(writes, timeout=10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not pending  # nobody waits forever
    for write in done:
        with pytest.raises(StoreError, match="outbox write failed"):
            write.result()


@contextmanager
def _cancelled_once_handed_over(store: SQLiteStore, matches: Callable[[str], bool]) -> Iterator[None]:
    """While the block runs, the statement `matches` picks out is handed to aiosqlite's thread and then its
    caller's task is cancelled: the race between a cancellation and a statement already on its way."""
    db = store.driver.db
    original = db.execute

    async def handed_over_then_cancelled(sql: str, *args: Any, **kwargs: Any) -> Any:
        if matches(sql):
            asyncio.ensure_future(original(sql, *args, **kwargs))  # on the thread's queue now
            await asyncio.sleep(0)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)  # the cancellation lands here
        return await original(sql, *args, **kwargs)

    db.execute = handed_over_then_cancelled  # type: ignore[method-assign]
    try:
        yield
    finally:
        db.execute = original  # type: ignore[method-assign]


@pytest.mark.parametrize("steps_before_cancel", [0, 1, 2, 3])
async def test_a_transaction_cancelled_anywhere_leaves_no_lock_behind(store: SQLiteStore, tmp_path: Path,
                                                                       steps_before_cancel: int) -> None:
    """A task cancelled while aiosqlite's thread still has its BEGIN (or a statement) in hand: the BEGIN
    runs after the cancel, so the rollback must be queued behind it, not decided from `in_transaction`
    as seen before it ran. Left open, it held the write lock for good and every later write waited on it
    (a gateway's worker is cancelled this way when it stops, mid-claim)."""
    await store.accept_send("acme", "alice", MSG, [], ttl_seconds=60)
    task = asyncio.ensure_future(store.claim_deliveries("w", 30, 10))
    for _ in range(steps_before_cancel):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.driver.db.execute("SELECT 1")  # whatever the thread had in hand has run
    assert not store.driver.db.in_transaction
    with sqlite3.connect(tmp_path / "w.db", timeout=0) as other:  # another process can write at once
        other.execute("INSERT INTO namespaces (name, created_at) VALUES ('other', 0)")


async def test_a_write_cancelled_while_its_commit_is_queued_is_still_announced(store: SQLiteStore,
                                                                                tmp_path: Path) -> None:
    """The task is cancelled after its COMMIT went to aiosqlite's thread: the COMMIT runs, so the device
    it wrote must be announced (every process's device cache follows those announcements), not lost to
    the cancellation until the cache's lifetime runs out."""
    await store.list_user_devices("acme", "alice")
    with _cancelled_once_handed_over(store, lambda sql: sql == "COMMIT"), pytest.raises(asyncio.CancelledError):
        await store.register_device("acme", "alice", "phone", "outbox", "tok-phone")
    assert [d.device_id for d in await store.list_user_devices("acme", "alice")] == ["phone"]


async def test_a_statement_cancelled_in_the_threads_hands_is_still_announced(store: SQLiteStore) -> None:
    device = await store.register_device("acme", "alice", "phone", "outbox", "tok-phone")
    assert len(await store.list_user_devices("acme", "alice")) == 1
    with (_cancelled_once_handed_over(store, lambda sql: sql.startswith("DELETE FROM devices")),
          pytest.raises(asyncio.CancelledError)):
        await store.delete_device("acme", device.id)
    assert await store.list_user_devices("acme", "alice") == []
