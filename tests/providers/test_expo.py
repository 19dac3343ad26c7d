"""Expo: credentials, tokens, batching, tickets and receipts, against a fake Expo service on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from wasmhost.providers import ProviderPool
from wasmhost.providers.expo import ExpoProvider, ExpoSpec, build_message
from wasmhost.push import CredentialsError, Defaults, Manager, PushMessage, ResolvedConfig, RetryPolicy
from wasmhost.push.provider import Delivery
from wasmhost.store import SQLiteStore
from wasmhost.testing.expo import FakeExpo

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


def tok(i: int | str) -> str:
    return f"ExponentPushToken[secretTok{i}]"


@pytest.fixture
async def fake() -> AsyncIterator[FakeExpo]:
    server = await FakeExpo(access_tokens={"expo-access-A", "expo-access-B"}).start()
    try:
        yield server
    finally:
        await server.aclose()


async def setup(store: SQLiteStore, fake: FakeExpo, devices: int = 1, *, namespace: str = "acme",
                access_token: str = "expo-access-A", spec: ExpoSpec | None = None) -> Manager:
    if not await store.namespace_exists(namespace):
        await store.create_namespace(namespace)
    spec = spec or ExpoSpec(store, allow_private_endpoints=True, receipt_delay=0.05, receipt_retry=0.05)
    await store.put_credentials(namespace, "expo", spec.validate({"endpoint": fake.url, "access_token": access_token}))
    store.max_devices_per_user = max(devices, store.max_devices_per_user)  # batching needs many
    for i in range(devices):
        await store.register_device(namespace, "alice", f"d{i}", "expo", tok(f"{namespace}{i}"))
    return Manager(store, ProviderPool([spec]), retry=FAST)


# -- credentials, tokens, payload --------------------------------------------------------------------------


def test_credentials_and_tokens() -> None:
    spec = ExpoSpec(None)  # type: ignore[arg-type]
    doc = spec.validate({"access_token": "secret-expo-token", "endpoint": "https://expo.example.com/"})
    assert doc == {"access_token": "secret-expo-token", "endpoint": "https://expo.example.com"}
    assert spec.redact(doc) == {"endpoint": "https://expo.example.com", "has_access_token": True,
                                "has_ca_bundle": False}
    assert spec.validate({}) == {}
    with pytest.raises(CredentialsError, match="endpoint rejected: address 10.0.0.1 is private"):
        spec.validate({"endpoint": "http://10.0.0.1"})
    with pytest.raises(CredentialsError, match="unknown field"):
        spec.validate({"accessToken": "x"})
    assert spec.validate_token(" ExpoPushToken[abc-123] ", None) == "ExpoPushToken[abc-123]"
    assert spec.validate_token("ExponentPushToken[xyz]", None) == "ExponentPushToken[xyz]"
    for bad in ("", "abc", "ExponentPushToken[]", "ExponentPushToken[a b]", "FooPushToken[abc]"):
        with pytest.raises(CredentialsError, match="ExponentPushToken"):
            spec.validate_token(bad, None)


def test_flat_config_token_enables_expo_and_the_document_overrides_it() -> None:
    spec = ExpoSpec(None)  # type: ignore[arg-type]
    assert spec.document_for(ResolvedConfig("ns")) is None
    flat = spec.document_for(ResolvedConfig("ns", expo_access_token="flat"))
    assert flat == {"access_token": "flat", "endpoint": "https://exp.host", "trusted": True}
    both = spec.document_for(ResolvedConfig("ns", expo_access_token="flat", credentials={
        "expo": {"access_token": "doc", "endpoint": "https://e.example"}}))
    assert both == {"access_token": "doc", "endpoint": "https://e.example", "trusted": False}


def test_message_mapping() -> None:
    m = PushMessage(title="t", body="b", data={"k": 1}, badge=0, sound="default", channel="news", priority="high",
                    ttl_seconds=60, content_available=True)
    assert build_message(m, "T") == {"to": "T", "priority": "high", "title": "t", "body": "b", "data": {"k": 1},
                                     "sound": "default", "badge": 0, "ttl": 60, "channelId": "news",
                                     "_contentAvailable": True}
    assert build_message(PushMessage(body="b"), "T")["priority"] == "default"


# -- delivery over real sockets ------------------------------------------------------------------------------


async def test_batches_of_100_gzip_and_tickets_mapped_by_position(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    manager = await setup(sqlite_store, fake, devices=250)
    fake.script[tok("acme149")] = ["dead"]
    fake.script[tok("acme7")] = ["toobig"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi", body="x" * 20))
    assert sorted(len(r["to"]) for r in fake.requests) == [50, 100, 100]
    assert all(r["gzip"] and r["auth"] == "Bearer expo-access-A" for r in fake.requests)
    failed = {r.device_id: (r.reason, r.unregistered) for r in report.results if not r.success}
    assert failed == {"d149": ("DeviceNotRegistered", True), "d7": ("MessageTooBig", False)}
    assert report.devices_succeeded == 248
    remaining = {d.device_id for d in await sqlite_store.list_user_devices("acme", "alice")}
    assert "d149" not in remaining and len(remaining) == 249
    await manager.aclose()


async def test_small_requests_are_not_gzipped(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    manager = await setup(sqlite_store, fake, devices=1)
    assert (await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))).ok
    assert fake.requests[0]["gzip"] is False
    assert fake.delivered == [{"to": tok("acme0"), "priority": "default", "title": "Hi"}]
    await manager.aclose()


async def test_receipt_device_not_registered_prunes_in_the_background(sqlite_store: SQLiteStore,
                                                                      fake: FakeExpo) -> None:
    fake.receipt_not_ready_polls = 1  # the first poll finds nothing ready: polled again later
    manager = await setup(sqlite_store, fake, devices=3)
    fake.script[tok("acme1")] = ["receipt_dead"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert report.ok  # the ticket was fine; the receipt says otherwise, later
    for _ in range(200):
        devices = {d.device_id for d in await sqlite_store.list_user_devices("acme", "alice")}
        if "d1" not in devices:
            break
        await asyncio.sleep(0.02)
    assert devices == {"d0", "d2"}
    assert len(fake.receipt_requests) >= 2
    await manager.aclose()


async def test_receipts_are_requested_in_batches_of_at_most_1000(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    provider = ExpoProvider(sqlite_store, base_url=fake.url, access_token="expo-access-A", trusted=True,
                            receipt_delay=3600)
    deliveries = [Delivery("acme", "u", f"d{i}", f"row{i}", tok(i), PushMessage(title="t")) for i in range(2500)]
    outcomes = await asyncio.gather(*(provider.send(deliveries[i:i + 100]) for i in range(0, 2500, 100)))
    assert all(o.success for batch in outcomes for o in batch)
    assert provider.pending_receipts == 2500 and fake.receipt_requests == []
    for pending in provider._pending.values():  # fast-forward: every receipt is due now
        pending.due = 0
    provider._wake.set()
    for _ in range(200):
        if provider.pending_receipts == 0:
            break
        await asyncio.sleep(0.02)
    assert sorted(len(ids) for ids in fake.receipt_requests) == [500, 1000, 1000]
    await provider.aclose()


async def test_transient_request_failures_are_retried_then_succeed(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    manager = await setup(sqlite_store, fake, devices=2)
    fake.request_script = ["drop", "500"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert report.ok and [r.attempts for r in report.results] == [3, 3]
    fake.request_script = ["429"]
    started = time.monotonic()
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert report.ok and [r.attempts for r in report.results] == [2, 2]
    assert time.monotonic() - started >= 0.9  # Retry-After: 1
    await manager.aclose()


async def test_ticket_level_rate_limit_retries_only_that_device(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    manager = await setup(sqlite_store, fake, devices=3)
    fake.script[tok("acme2")] = ["rate"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert report.ok and [r.attempts for r in report.results] == [1, 1, 2]
    assert [len(r["to"]) for r in fake.requests] == [3, 1]
    await manager.aclose()


async def test_mixed_projects_are_split_and_resent(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    fake.projects = {"acme1": "@team/other-app"}
    manager = await setup(sqlite_store, fake, devices=3)
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert report.ok
    assert sorted(len(r["to"]) for r in fake.requests) == [1, 2, 3]  # the refused mixed one, then one per project
    await manager.aclose()


async def test_unauthorized_surfaces_and_stops_hammering(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    manager = await setup(sqlite_store, fake, devices=2, access_token="expo-wrong")
    first = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert [(r.reason, r.status, r.attempts) for r in first.results] == [("UNAUTHORIZED", 401, 1)] * 2
    second = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert not second.ok and "fix the credentials" in second.results[0].message
    assert len(fake.requests) == 0  # the fake refuses before recording; no second request reached it either
    await manager.aclose()


async def test_two_tenants_never_share_a_request(sqlite_store: SQLiteStore, fake: FakeExpo) -> None:
    spec = ExpoSpec(sqlite_store, allow_private_endpoints=True, receipt_delay=60)
    a = await setup(sqlite_store, fake, devices=60, namespace="a", access_token="expo-access-A", spec=spec)
    await setup(sqlite_store, fake, devices=60, namespace="b", access_token="expo-access-B", spec=spec)
    reports = await asyncio.gather(*(a.send_to_user(ns, "alice", PushMessage(title=ns)) for ns in ("a", "b") * 3))
    assert all(r.ok for r in reports)
    for request in fake.requests:
        namespace = "a" if request["auth"] == "Bearer expo-access-A" else "b"
        assert all(t.startswith(f"ExponentPushToken[secretTok{namespace}") for t in request["to"])
    await a.aclose()


async def test_operator_default_token_and_no_token_in_reports_or_logs(
    sqlite_store: SQLiteStore, fake: FakeExpo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await sqlite_store.create_namespace("acme")
    spec = ExpoSpec(sqlite_store, allow_private_endpoints=True, receipt_delay=60)
    defaults = Defaults(expo_access_token="expo-access-B", credentials={"expo": {"endpoint": fake.url}})
    manager = Manager(sqlite_store, ProviderPool([spec]), defaults, retry=FAST)
    for i in range(4):
        await sqlite_store.register_device("acme", "alice", f"d{i}", "expo", tok(i))
    fake.script[tok(0)] = ["dead"]
    fake.script[tok(1)] = ["toobig"]
    fake.script[tok(2)] = ["rate"] * 3
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"), deadline=time.monotonic() + 5)
    assert [r.success for r in report.results] == [False, False, False, True]
    assert fake.requests[0]["auth"] == "Bearer expo-access-B"
    await fake.aclose()
    report2 = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"), deadline=time.monotonic() + 5)
    text = report.to_json() + report2.to_json() + "\n".join(r.getMessage() for r in caplog.records)
    assert "secretTok" not in text and "expo-access" not in text
    await manager.aclose()


async def test_a_private_ca_endpoint_works_with_its_ca_bundle_and_fails_as_credentials_without(
    sqlite_store: SQLiteStore,
) -> None:
    import ssl

    import trustme

    from wasmhost.testing import FakeServer

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    expo = FakeExpo()
    expo.server = await FakeServer(expo.handle, ssl_context=server_ctx).start()
    try:
        await sqlite_store.create_namespace("acme")
        await sqlite_store.register_device("acme", "alice", "d0", "expo", tok(0))
        spec = ExpoSpec(sqlite_store, allow_private_endpoints=True, receipt_delay=60)
        manager = Manager(sqlite_store, ProviderPool([spec]), retry=FAST)
        await sqlite_store.put_credentials("acme", "expo", spec.validate({"endpoint": expo.url}))
        result = (await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))).results[0]
        # Not retried: which roots to trust is part of the credentials, so it is theirs to fix.
        assert (result.success, result.reason, result.attempts) == (False, "TLSVerifyFailed", 1)
        await sqlite_store.put_credentials("acme", "expo", spec.validate(
            {"endpoint": expo.url, "ca_bundle": ca.cert_pem.bytes().decode()}))
        manager.invalidate("acme")
        assert (await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))).ok
        assert expo.url.startswith("https://") and len(expo.delivered) == 1
        await manager.aclose()
    finally:
        await expo.aclose()


async def test_a_whole_request_error_never_shows_one_device_another_devices_token(
    sqlite_store: SQLiteStore, fake: FakeExpo
) -> None:
    manager = await setup(sqlite_store, fake, devices=3)
    fake.request_script = ["400-echo"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hi"))
    assert [r.reason for r in report.results] == ["VALIDATION_ERROR"] * 3
    assert "secretTok" not in report.to_json() and "[device-token]" in report.results[0].message
    await manager.aclose()
