"""What only a shared PostgreSQL has to get right: gateways racing each other, and its own error text."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.store.conftest import Backend
from wasmhost.store import KeyRing, StoreError, open_store
from wasmhost.store.postgres import PostgresStore
from wasmhost.store.queue import DeliveryUpdate


async def test_two_gateways_racing_for_one_token_leave_exactly_one_owner(
    pg_backend: Backend, keyring: KeyRing
) -> None:
    a, b = await pg_backend.open(keyring), await pg_backend.open(keyring)
    await a.create_namespace("acme")
    for round_ in range(30):
        token = f"physical-token-{round_}"
        await asyncio.gather(
            a.register_device("acme", f"alice{round_}", "phone", "outbox", token),
            b.register_device("acme", f"bob{round_}", "phone", "outbox", token),
        )
        owners = [
            user for user in (f"alice{round_}", f"bob{round_}")
            for d in await a.list_user_devices("acme", user, with_tokens=True) if d.token == token
        ]
        assert len(owners) == 1, f"round {round_}: owners {owners}"


async def test_racing_first_registrations_of_one_device_keep_its_token_readable(
    pg_backend: Backend, keyring: KeyRing
) -> None:
    a, b = await pg_backend.open(keyring), await pg_backend.open(keyring)
    await a.create_namespace("acme")
    for round_ in range(20):
        await asyncio.gather(
            a.register_device("acme", "alice", f"phone{round_}", "outbox", f"ta{round_}"),
            b.register_device("acme", "alice", f"phone{round_}", "outbox", f"tb{round_}"),
        )
    devices = await a.list_user_devices("acme", "alice", with_tokens=True)  # every token still opens
    assert len(devices) == 20 and all(d.token in (f"ta{i}", f"tb{i}") for i, d in enumerate(devices))


async def test_gateways_starting_together_migrate_once(pg_backend: Backend, keyring: KeyRing) -> None:
    stores = await asyncio.gather(*(pg_backend.open(keyring) for _ in range(4)))
    row = await pg_backend.fetchone("SELECT count(*), count(DISTINCT version) FROM schema_version")
    assert row is not None and row[0] == row[1] >= 2
    # one fingerprint key for all of them, so they agree on token ownership
    fps = {s.token_fingerprint("acme", "tok") for s in stores}
    assert len(fps) == 1


async def test_open_store_dispatches_postgresql_urls(pg_backend: Backend, keyring: KeyRing) -> None:
    store: Any = await open_store(pg_backend.location, keyring)
    try:
        assert isinstance(store, PostgresStore)
        await store.ping()
    finally:
        await store.aclose()


async def test_errors_name_the_failure_never_the_values(pg_backend: Backend, keyring: KeyRing) -> None:
    store = await pg_backend.open(keyring)
    await store.create_namespace("acme")
    await store.add_api_key("acme", "k1", "secret-hash-value")
    with pytest.raises(StoreError) as info:
        await store.add_api_key("acme", "k2", "secret-hash-value")
    assert "secret-hash-value" not in str(info.value)
    conn = await asyncpg.connect(pg_backend.location)
    try:
        await conn.execute("DROP TABLE outbox")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="postgresql: UndefinedTableError") as info:
        await store.record_delivery("acme", "alice", "phone", {"title": "private words"})
    assert "private words" not in str(info.value)


async def test_unreachable_server_and_bad_settings_are_clear_errors(keyring: KeyRing,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for url, problem in (
        ("postgresql://postgres:pw-not-shown@127.0.0.1:1/x", "cannot connect to PostgreSQL"),
        ("postgresql://postgres:pw-not-shown@127.0.0.1:notaport/x", "invalid PostgreSQL URL"),
        ("postgresql://postgres:pw-not-shown@[::1/x", "invalid PostgreSQL URL"),
        ("postgresql://postgres:pw-not-shown@127.0.0.1/x?sslmode=pw-not-shown", "cannot connect to PostgreSQL"),
    ):
        with pytest.raises(StoreError, match=problem) as info:
            await PostgresStore(url, keyring).open()
        assert "pw-not-shown" not in str(info.value)
    monkeypatch.setenv("WASMHOST_PG_POOL_MAX", "lots")
    with pytest.raises(ValueError, match="WASMHOST_PG_POOL_MAX must be a positive integer"):
        PostgresStore("postgresql://127.0.0.1/x", keyring)
    with pytest.raises(ValueError, match="pool sizes"):
        PostgresStore("postgresql://127.0.0.1/x", keyring, min_size=5, max_size=2)


async def test_delivery_outcomes_commit_without_waiting_for_the_disk_and_the_accept_waits(
    pg_backend: Backend, keyring: KeyRing
) -> None:
    """A delivery's outcome (and the outbox's record) may be lost in a server crash — its row still holds
    its lease and is retried — so those commits skip the disk flush; the accept never does."""
    store: Any = await open_store(pg_backend.location, keyring)
    try:
        seen: list[tuple[bool, str]] = []
        commit_now = store.driver.commit_now

        async def spy(steps: Any, *, flush: bool = True, change: Any = None) -> None:
            seen.append((flush, steps[0][0].split()[1 if steps[0][0].startswith("UPDATE") else 2]))
            await commit_now(steps, flush=flush, change=change)

        store.driver.commit_now = spy
        await store.create_namespace("acme")
        await store.accept_send("acme", "alice", {"body": "hi"}, [], ttl_seconds=60)
        await store.record_deliveries("acme", [("alice", "phone", {"body": "hi"})])
        await store.update_deliveries("owner", [])  # nothing to write: no commit at all
        await store.update_deliveries("owner", [DeliveryUpdate("no-such-row", "delivered")])
        assert seen == [(True, "sends"), (False, "outbox"), (False, "deliveries")]
        assert await store.driver.pool.fetchval("SHOW synchronous_commit") == "on"
        assert await store.driver.unflushed_pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await store.aclose()


async def test_a_pooled_connection_goes_back_without_a_round_trip(pg_backend: Backend, keyring: KeyRing) -> None:
    """asyncpg's default release runs a reset query: one more exchange after every hot-path statement."""
    store: Any = await open_store(pg_backend.location, keyring)
    try:
        for pool in (store.driver.pool, store.driver.unflushed_pool):
            queries: list[str] = []
            async with pool.acquire() as conn:
                conn.add_query_logger(lambda record, seen=queries: seen.append(record.query))
                await conn.execute("SELECT 1")
            # Released by now: the default reset would have logged its query too.
            assert queries == ["SELECT 1"]
    finally:
        await store.aclose()
