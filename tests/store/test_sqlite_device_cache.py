"""The SQLite store keeps a user's device list between sends, and never serves it stale: any commit by
another connection (this process's writes, or another process on the same file) drops it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cachetools import TTLCache

from wasmhost.store import KeyRing, SQLiteStore


@pytest.fixture
async def store(tmp_path: Path, keyring: KeyRing) -> Any:
    s = await SQLiteStore(tmp_path / "d.db", keyring).open()
    await s.create_namespace("acme")
    await s.register_device("acme", "alice", "phone", "outbox", "tok-phone")
    try:
        yield s
    finally:
        await s.aclose()


def _count_queries(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    queries: list[str] = []
    original = store.driver.fetch

    async def spy(sql: str, params: Sequence[Any] = (), *, quick: bool = False) -> list[Any]:
        queries.append(sql)
        return await original(sql, params, quick=quick)

    monkeypatch.setattr(store.driver, "fetch", spy)
    return queries


async def test_a_repeated_lookup_is_served_from_memory(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    queries = _count_queries(store, monkeypatch)
    first = await store.list_user_devices("acme", "alice", with_tokens=True)
    await store.record_deliveries("acme", [("alice", "phone", {"title": "hi"})])  # our own outbox commit
    second = await store.list_user_devices("acme", "alice", with_tokens=True)
    assert first == second and second[0].token == "tok-phone"
    assert len(queries) == 1


async def test_writes_through_the_store_are_seen_at_once(store: SQLiteStore) -> None:
    await store.list_user_devices("acme", "alice")
    await store.register_device("acme", "alice", "tablet", "outbox", "tok-tablet")
    assert [d.device_id for d in await store.list_user_devices("acme", "alice")] == ["phone", "tablet"]
    # The same physical token registered by bob: it is his now, and no longer alice's (last wins).
    await store.register_device("acme", "bob", "phone", "outbox", "tok-phone")
    assert [d.device_id for d in await store.list_user_devices("acme", "alice")] == ["tablet"]
    assert [d.device_id for d in await store.list_user_devices("acme", "bob")] == ["phone"]


async def test_a_write_from_another_process_is_seen_at_once(store: SQLiteStore, tmp_path: Path) -> None:
    """Another wasmhost process (`wasmhost device remove` against the same file) announces its change
    through the change ring the moment it commits."""
    assert len(await store.list_user_devices("acme", "alice")) == 1
    other = await SQLiteStore(tmp_path / "d.db", store.keyring).open()
    try:
        (device,) = await other.list_user_devices("acme", "alice")
        await other.delete_device("acme", device.id)
    finally:
        await other.aclose()
    assert await store.list_user_devices("acme", "alice") == []


async def test_a_foreign_write_is_seen_within_the_cache_lifetime(store: SQLiteStore, tmp_path: Path) -> None:
    """A program other than wasmhost editing the file announces nothing: the cache's TTL bounds it."""
    store._devices = TTLCache(maxsize=10, ttl=0.3)
    assert len(await store.list_user_devices("acme", "alice")) == 1
    other = sqlite3.connect(tmp_path / "d.db")
    with other:
        other.execute("DELETE FROM devices WHERE user_id = 'alice'")
    other.close()
    assert len(await store.list_user_devices("acme", "alice")) == 1  # kept: nothing was announced
    await asyncio.sleep(0.4)
    assert await store.list_user_devices("acme", "alice") == []


async def test_a_send_queued_for_the_workers_keeps_the_device_list(store: SQLiteStore, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued send announces its deliveries through the change ring (to wake the workers); that is no
    device change, so it must not empty the cache: it did, and every ``?wait=0`` send read and decrypted
    its devices again. Another process's device change still empties it at once."""
    from wasmhost.store.queue import Target

    (device,) = await store.list_user_devices("acme", "alice")
    queries = _count_queries(store, monkeypatch)
    sequence = store.relay.sequence() if store.relay is not None else 0
    await store.accept_send("acme", "alice", {"title": "hi"}, [Target(device.id, "phone", "outbox")],
                            ttl_seconds=60)
    assert store.relay is not None and store.relay.sequence() > sequence  # announced for the workers
    await store.list_user_devices("acme", "alice")
    assert queries == []
    other = await SQLiteStore(tmp_path / "d.db", store.keyring).open()
    try:
        await other.register_device("acme", "alice", "tablet", "outbox", "tok-tablet")
    finally:
        await other.aclose()
    assert len(await store.list_user_devices("acme", "alice")) == 2 and len(queries) == 1
