"""Change notifications: every cached kind of write is announced once it commits, on both backends;
on PostgreSQL other gateways hear it through LISTEN/NOTIFY, and a dropped listener recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg
import pytest

from tests.store.conftest import Backend
from tests.store.pg import SERVER_URL
from tests.store.tcpproxy import TcpProxy
from wasmhost.store import KeyRing, NotFound, PushConfig
from wasmhost.store.changes import Change, LocalChangeFeed
from wasmhost.store.postgres import PgChangeFeed


def _recorder(store: Any) -> list[Change]:
    seen: list[Change] = []
    store.changes.subscribe(seen.append)
    return seen


async def _every_kind_of_write(store: Any) -> str:
    await store.put_push_config(PushConfig("acme", "https://ntfy.example", "tok"))
    await store.delete_push_config("acme")
    await store.put_credentials("acme", "ntfy", {"base_url": "https://ntfy.example"})
    await store.delete_credentials("acme", "ntfy")
    await store.put_auth_settings("acme", {"alg": "HS256", "key": "k"})
    await store.delete_auth_settings("acme")
    await store.add_api_key("acme", "k1", "h1")
    await store.revoke_api_key("acme", "k1")
    await store.put_function("acme", "f", b"\0asm", {})
    await store.delete_function("acme", "f")
    dev = await store.register_device("acme", "alice", "phone", "outbox", "tok")
    await store.delete_device("acme", dev.id)
    dev2 = await store.register_device("acme", "alice", "tablet", "outbox", "tok2")
    await store.prune_device("acme", dev2.id, None)
    return str(dev.id)


EXPECTED_KINDS = [
    "push_config", "push_config", "credentials", "credentials", "auth", "auth", "api_key", "api_key",
    "function", "function", "device", "device", "device", "device",
]


async def test_every_write_is_announced_after_commit(store: Any) -> None:
    await store.create_namespace("acme")
    seen = _recorder(store)
    device_id = await _every_kind_of_write(store)
    assert [c.kind for c in seen] == EXPECTED_KINDS
    assert {c.namespace for c in seen} == {"acme"}
    assert Change("acme", "credentials", "ntfy") in seen and Change("acme", "function", "f") in seen
    assert Change("acme", "device", device_id) in seen


async def test_writes_that_change_nothing_are_not_announced(store: Any) -> None:
    await store.create_namespace("acme")
    seen = _recorder(store)
    await store.delete_credentials("acme", "ntfy")
    await store.delete_push_config("acme")
    await store.delete_auth_settings("acme")
    assert not await store.prune_device("acme", "no-such-device", None)
    assert seen == []


async def test_a_failing_subscriber_does_not_break_the_write_or_others() -> None:
    feed = LocalChangeFeed()
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("boom")

    feed.subscribe(broken)
    unsubscribe = feed.subscribe(seen.append)
    feed.publish(Change("acme", "device"))
    unsubscribe()
    feed.publish(Change("acme", "device"))
    assert seen == [Change("acme", "device")]


def test_change_payload_roundtrip_and_bad_input() -> None:
    change = Change("acme", "credentials", "apns")
    assert Change.from_payload(change.to_payload("me")) == (change, "me")
    assert Change.from_payload(Change("a", "function", "x" * 10_000).to_payload())[0] == Change("a", "function", "")
    with pytest.raises(ValueError, match="unknown change kind"):
        Change("acme", "bogus")
    for junk in ("", "[]", "{}", '{"ns": "a", "kind": "nope"}'):
        with pytest.raises(ValueError):
            Change.from_payload(junk)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def _pair(pg: Backend, keyring: KeyRing) -> tuple[Any, Any]:
    return await pg.open(keyring), await pg.open(keyring)


async def test_other_gateway_hears_every_change_and_no_echo(pg_backend: Backend, keyring: KeyRing) -> None:
    a, b = await _pair(pg_backend, keyring)
    await a.create_namespace("acme")
    seen_a, seen_b = _recorder(a), _recorder(b)
    await _every_kind_of_write(a)
    await _until(lambda: len(seen_b) >= len(EXPECTED_KINDS))
    await asyncio.sleep(0.1)  # anything extra (an echo, a duplicate) would arrive by now
    assert [c.kind for c in seen_b] == EXPECTED_KINDS
    assert [c.kind for c in seen_a] == EXPECTED_KINDS  # local publish only, not again via NOTIFY
    assert b.changes.received == len(EXPECTED_KINDS) and a.changes.received == 0


async def test_rolled_back_write_is_not_announced(pg_backend: Backend, keyring: KeyRing) -> None:
    a, b = await _pair(pg_backend, keyring)
    seen_a, seen_b = _recorder(a), _recorder(b)
    with pytest.raises(NotFound):
        await a.put_credentials("missing-namespace", "ntfy", {"base_url": "https://x.example"})
    with pytest.raises(NotFound):
        await a.register_device("missing-namespace", "u", "d", "outbox", "t")
    await a.create_namespace("acme")
    await a.put_credentials("acme", "outbox", {})  # a marker that does arrive
    await _until(lambda: len(seen_b) == 1)
    assert seen_a == seen_b == [Change("acme", "credentials", "outbox")]


async def test_listener_reconnects_after_its_backend_is_terminated(pg_backend: Backend, keyring: KeyRing) -> None:
    a, b = await _pair(pg_backend, keyring)
    seen_b = _recorder(b)
    await a.create_namespace("acme")
    old_pid = b.changes.pid
    conn = await asyncpg.connect(pg_backend.location)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await conn.close()
    await _until(lambda: b.changes.reconnects == 1 and b.changes.listener_connected)
    assert b.changes.pid != old_pid and b.changes.disconnects == 1
    assert seen_b == [Change.everything()]
    await a.put_credentials("acme", "outbox", {})  # and it hears changes again
    await _until(lambda: len(seen_b) == 2)
    assert seen_b[1] == Change("acme", "credentials", "outbox")


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    parts = urlsplit(SERVER_URL)
    p = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    try:
        yield p
    finally:
        await p.aclose()


def _via(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))


async def _feed_via(proxy: TcpProxy, url: str, **options: float) -> PgChangeFeed:
    dsn, _, query = _via(proxy, url).partition("?")
    settings = dict(parse_qsl(query))
    feed = PgChangeFeed(lambda: asyncpg.connect(dsn, server_settings=settings), **options)
    await feed.start()
    return feed


async def test_changes_missed_while_away_are_covered_by_one_full_invalidation(
    pg_backend: Backend, keyring: KeyRing, proxy: TcpProxy
) -> None:
    a = await pg_backend.open(keyring)
    await a.create_namespace("acme")
    feed = await _feed_via(proxy, pg_backend.location, backoff_min=0.05, backoff_max=0.1)
    try:
        seen: list[Change] = []
        feed.subscribe(seen.append)
        proxy.accepting = False
        proxy.cut()  # the database "fails over": connection gone, reconnects refused for now
        await _until(lambda: feed.disconnects == 1 and not feed.listener_connected)
        await a.put_credentials("acme", "outbox", {})  # nobody hears this NOTIFY on the feed's behalf
        await asyncio.sleep(0.3)  # a few refused reconnects
        assert seen == [] and not feed.listener_connected
        proxy.accepting = True
        await _until(lambda: feed.listener_connected)
        assert feed.reconnects == 1 and seen == [Change.everything()]
    finally:
        await feed.aclose()


async def test_listener_notices_a_silent_connection_through_its_health_check(
    pg_backend: Backend, keyring: KeyRing, proxy: TcpProxy
) -> None:
    feed = await _feed_via(proxy, pg_backend.location, health_interval=0.05, health_timeout=0.2)
    try:
        seen: list[Change] = []
        feed.subscribe(seen.append)
        proxy.freeze()  # no FIN, no RST: only the health check can tell
        await _until(lambda: feed.disconnects == 1)
        await _until(lambda: feed.listener_connected and feed.reconnects == 1)
        assert seen == [Change.everything()]
    finally:
        await feed.aclose()


async def test_a_feed_that_starts_deaf_announces_everything_once_it_hears(
    pg_backend: Backend, proxy: TcpProxy
) -> None:
    proxy.accepting = False  # the database is unreachable when the gateway starts
    feed = await _feed_via(proxy, pg_backend.location, backoff_min=0.05, backoff_max=0.1)
    try:
        seen: list[Change] = []
        feed.subscribe(seen.append)
        assert not feed.listener_connected
        await asyncio.sleep(0.2)
        proxy.accepting = True
        await _until(lambda: feed.listener_connected)
        assert seen == [Change.everything()] and feed.reconnects == 1 and feed.disconnects == 0
    finally:
        await feed.aclose()
