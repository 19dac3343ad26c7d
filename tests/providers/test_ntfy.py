"""ntfy: credentials, tokens, and delivery to a fake ntfy server over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import pytest

from wasmhost.providers import ProviderPool
from wasmhost.providers.ntfy import NtfySpec
from wasmhost.push import CredentialsError, Defaults, Manager, PushMessage, RetryPolicy
from wasmhost.push.credentials import validate_credentials
from wasmhost.store import SQLiteStore
from wasmhost.store.base import PushConfig
from wasmhost.testing.ntfy import FakeNtfy

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeNtfy]:
    server = await FakeNtfy(token="tk_secret_token_1").start()
    try:
        yield server
    finally:
        await server.aclose()


async def make_manager(store: SQLiteStore, *, defaults: Defaults, allow_private_endpoints: bool = False) -> Manager:
    await store.create_namespace("acme")
    return Manager(store, ProviderPool([NtfySpec(allow_private_endpoints=allow_private_endpoints)]),
                   defaults, retry=FAST)


# -- credentials ---------------------------------------------------------------------------------------


def test_validate_accepts_token_or_basic_auth_and_redacts_secrets() -> None:
    spec = NtfySpec()
    doc = spec.validate({"base_url": "https://ntfy.example.com/", "auth_token": "tk_abc123"})
    assert doc == {"base_url": "https://ntfy.example.com", "auth_token": "tk_abc123"}
    shown = spec.redact(doc)
    assert shown == {"base_url": "https://ntfy.example.com", "has_auth_token": True, "has_password": False,
                     "has_ca_bundle": False}
    basic = spec.validate({"base_url": "https://ntfy.example.com", "username": "bob", "password": "pw-123456"})
    assert "pw-123456" not in json.dumps(spec.redact(basic))


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "at least base_url"),
    ({"base_url": "ftp://x.example"}, "base_url rejected: URL scheme"),
    ({"base_url": "http://127.0.0.1:8080"}, "base_url rejected: address 127.0.0.1 is loopback"),
    ({"base_url": "http://169.254.169.254"}, "base_url rejected: .*link-local"),
    ({"base_url": "http://0x7f.1"}, "base_url rejected: .*numeric"),
    ({"base_url": "https://n.example", "auth_token": "a b"}, "auth_token must be printable"),
    ({"base_url": "https://n.example", "auth_token": "t", "username": "u", "password": "p"}, "either auth_token"),
    ({"base_url": "https://n.example", "username": "u"}, "together"),
    ({"base_url": "https://n.example", "topic_mode": "opaque"}, "unknown field"),
    ({"base_url": "https://n.example", "ca_bundle": "nope"}, "ca_bundle must be PEM"),
])
def test_validate_rejects_with_a_message_naming_the_field(doc: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError, match=message):
        NtfySpec().validate(doc)


def test_validation_errors_never_echo_a_secret() -> None:
    with pytest.raises(CredentialsError) as info:
        NtfySpec().validate({"base_url": "https://n.example", "auth_token": "tk_very secret"})
    assert "very" not in str(info.value)


async def test_save_time_check_resolves_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: object, *a: object, **k: object) -> list[object]:
        return [(2, 1, 6, "", ("10.0.0.7", 443))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(CredentialsError, match="base_url rejected: address 10.0.0.7 is private"):
        await validate_credentials(NtfySpec(), {"base_url": "https://ntfy.internal.example"})


# -- tokens ----------------------------------------------------------------------------------------------


def test_tokens_topics_and_unifiedpush_endpoints() -> None:
    spec = NtfySpec()
    doc = {"base_url": "https://ntfy.example.com"}
    assert spec.validate_token(" alerts_1 ", doc) == "alerts_1"
    assert spec.validate_token("https://ntfy.example.com/upAbC123?up=1", doc) == "https://ntfy.example.com/upAbC123?up=1"
    for bad, why in [
        ("", "required"), ("a/b", "1-64 characters"), ("x" * 65, "1-64"), ("settings", "reserved"),
        ("https://evil.example/upX", "configured ntfy server"),
        ("http://ntfy.example.com/upX", "configured ntfy server"),
        ("https://user@ntfy.example.com/upX", "user name"),
        ("https://ntfy.example.com/a/b", "one topic"),
    ]:
        with pytest.raises(CredentialsError, match=why):
            spec.validate_token(bad, doc)


# -- delivery over real sockets ----------------------------------------------------------------------------


async def test_publishes_non_ascii_title_and_tags_intact_with_bearer_auth(
    sqlite_store: SQLiteStore, fake: FakeNtfy
) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "alice_topic")
    message = PushMessage(title="Grüße — ☕ 日本", body="Ça va? 🚀", channel="café", priority="high")
    report = await manager.send_to_user("acme", "alice", message)
    assert report.ok, report.to_dict()
    assert fake.published == [{"topic": "alice_topic", "message": "Ça va? 🚀", "title": "Grüße — ☕ 日本",
                               "priority": 4, "tags": ["café"], "cache": None}]
    assert fake.auth_seen == ["Bearer tk_secret_token_1"]
    await manager.aclose()


async def test_tenant_document_overrides_flat_config_and_basic_auth_works(sqlite_store: SQLiteStore) -> None:
    fake = await FakeNtfy(username="bob", password="pw-secret-1").start()
    try:
        manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url="http://198.51.100.1"),
                                     allow_private_endpoints=True)
        spec = manager.factory.specs["ntfy"]  # type: ignore[attr-defined]
        doc = await validate_credentials(spec, {"base_url": fake.url, "username": "bob", "password": "pw-secret-1"})
        await sqlite_store.put_credentials("acme", "ntfy", doc)
        await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "t1")
        report = await manager.send_to_user("acme", "alice", PushMessage(body="hi", data={"k": 1}))
        assert report.ok, report.to_dict()
        assert fake.published[0]["message"] == "hi"
        assert fake.auth_seen[0].startswith("Basic ")
        await manager.aclose()
    finally:
        await fake.aclose()


async def test_data_only_message_rides_in_the_body(sqlite_store: SQLiteStore, fake: FakeNtfy) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "t1")
    assert (await manager.send_to_user("acme", "alice", PushMessage(data={"order": 42}))).ok
    assert json.loads(fake.published[0]["message"]) == {"order": 42}
    await manager.aclose()


async def test_transient_failures_are_retried_then_succeed(sqlite_store: SQLiteStore, fake: FakeNtfy) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "flaky")
    fake.script["flaky"] = ["drop", "500"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="t"))
    result = report.results[0]
    assert result.success and result.attempts == 3
    assert fake.attempts["flaky"] == 3
    await manager.aclose()


async def test_rate_limit_honours_retry_after(sqlite_store: SQLiteStore, fake: FakeNtfy) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "busy")
    fake.script["busy"] = ["429"]
    started = time.monotonic()
    report = await manager.send_to_user("acme", "alice", PushMessage(title="t"))
    assert report.ok and report.results[0].attempts == 2
    assert time.monotonic() - started >= 0.9  # the fake said Retry-After: 1
    await manager.aclose()


@pytest.mark.parametrize(("action", "reason", "status"), [
    ("400", "ntfy 40007", 400), ("413", "ntfy 41301", 413), ("42908", "ntfy 42908", 429),
])
async def test_permanent_failures_and_daily_quota_are_not_retried(
    sqlite_store: SQLiteStore, fake: FakeNtfy, action: str, reason: str, status: int
) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "bad")
    fake.script["bad"] = [action, action, action]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="t"), deadline=time.monotonic() + 5)
    result = report.results[0]
    assert (result.success, result.reason, result.status, result.attempts) == (False, reason, status, 1)
    assert fake.attempts["bad"] == 1
    await manager.aclose()


async def test_broken_credentials_surface_and_stop_hammering(sqlite_store: SQLiteStore, fake: FakeNtfy) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url, ntfy_auth_token="tk_wrong"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "t1")
    first = await manager.send_to_user("acme", "alice", PushMessage(title="t"))
    assert (first.results[0].reason, first.results[0].status, first.results[0].attempts) == ("ntfy 40101", 401, 1)
    second = await manager.send_to_user("acme", "alice", PushMessage(title="t"))
    assert not second.ok and "fix the credentials" in second.results[0].message
    assert len(fake.auth_seen) == 1  # the second send made no request
    await manager.aclose()


async def test_unifiedpush_endpoint_is_published_on_its_path_and_a_foreign_one_never(
    sqlite_store: SQLiteStore, fake: FakeNtfy
) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", f"{fake.url}/upSecretTopic1?up=1")
    await sqlite_store.register_device("acme", "alice", "laptop", "ntfy", "http://127.0.0.2:9/upOther")
    report = await manager.send_to_user("acme", "alice", PushMessage(title="Hé", body="b"))
    by_device = {r.device_id: r for r in report.results}
    assert by_device["phone"].success
    assert not by_device["laptop"].success and by_device["laptop"].reason == "InvalidToken"
    assert fake.published == [{"topic": "upSecretTopic1", "message": '{"title":"Hé","body":"b"}',
                               "unifiedpush": True, "query": ""}]
    assert "upOther" not in report.to_json() and "upSecretTopic1" not in report.to_json()
    await manager.aclose()


async def test_a_tenant_server_on_loopback_is_refused_at_send_time_but_the_operator_default_works(
    sqlite_store: SQLiteStore, fake: FakeNtfy
) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url,
                                                                  ntfy_auth_token="tk_secret_token_1"))
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "t1")
    assert (await manager.send_to_user("acme", "alice", PushMessage(title="operator"))).ok
    # The same loopback URL, now set by the tenant (e.g. saved before the guard, or DNS rebinding later).
    await sqlite_store.put_push_config(PushConfig("acme", ntfy_base_url=fake.url))
    manager.invalidate("acme")
    report = await manager.send_to_user("acme", "alice", PushMessage(title="tenant"))
    result = report.results[0]
    assert (result.success, result.reason, result.attempts) == (False, "BlockedURL", 1)
    assert "loopback" in result.message
    assert len(fake.published) == 1
    await manager.aclose()


async def test_no_token_or_url_in_reports_logs_or_errors(
    sqlite_store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = await FakeNtfy().start()
    manager = await make_manager(sqlite_store, defaults=Defaults(ntfy_base_url=fake.url))
    secret_topics = ["topicSecretAAA", "topicSecretBBB", "topicSecretCCC"]
    for i, topic in enumerate(secret_topics):
        await sqlite_store.register_device("acme", "alice", f"d{i}", "ntfy", topic)
    fake.script["topicSecretAAA"] = ["drop"] * 3
    fake.script["topicSecretBBB"] = ["400"]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="t"), deadline=time.monotonic() + 5)
    await fake.aclose()
    assert [r.success for r in report.results] == [False, False, True]
    report = await manager.send_to_user("acme", "alice", PushMessage(title="t"), deadline=time.monotonic() + 5)
    assert report.results[0].reason == "ConnectionError"  # the server is gone now
    text = report.to_json() + "\n".join(r.getMessage() for r in caplog.records)
    for topic in secret_topics:
        assert topic not in text
    assert "127.0.0.1:" not in text
    await manager.aclose()


async def test_one_client_survives_dispatcher_rebuilds_and_is_replaced_when_credentials_change(
    sqlite_store: SQLiteStore, fake: FakeNtfy
) -> None:
    manager = await make_manager(sqlite_store, defaults=Defaults(), allow_private_endpoints=True)
    await sqlite_store.put_credentials("acme", "ntfy", {"base_url": fake.url, "auth_token": "tk_secret_token_1"})
    await sqlite_store.register_device("acme", "alice", "phone", "ntfy", "t1")
    for _ in range(5):
        assert (await manager.send_to_user("acme", "alice", PushMessage(title="t"))).ok
        manager.invalidate("acme")  # what a config change elsewhere, or the TTL, does
    assert fake.server is not None and fake.server.connections == 1
    first = manager.factory._live[("acme", "ntfy")].provider  # type: ignore[attr-defined]
    await sqlite_store.put_credentials("acme", "ntfy", {"base_url": fake.url, "auth_token": "tk_rotated"})
    manager.invalidate("acme")
    fake.token = "tk_rotated"
    assert (await manager.send_to_user("acme", "alice", PushMessage(title="t"))).ok
    assert fake.auth_seen[-1] == "Bearer tk_rotated"
    assert manager.factory._live[("acme", "ntfy")].provider is not first  # type: ignore[attr-defined]
    assert fake.server.connections == 2  # the old client was closed, the new one connected
    await manager.aclose()


async def test_a_server_slower_than_the_timeout_is_a_transient_timeout(sqlite_store: SQLiteStore) -> None:
    from wasmhost.providers.ntfy import NtfyProvider
    from wasmhost.push.provider import Delivery

    fake = await FakeNtfy(delay=1.0).start()
    try:
        provider = NtfyProvider(fake.url, trusted=True, timeout=0.2)
        outcome = (await provider.send([Delivery("acme", "u", "d", "r", "t1", PushMessage(title="t"))]))[0]
        assert (outcome.success, outcome.reason, outcome.kind.value if outcome.kind else "") == (
            False, "Timeout", "transient")
        await provider.aclose()
    finally:
        await fake.aclose()
