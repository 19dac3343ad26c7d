"""FCM HTTP v1: credentials, message building and classification (unit), then delivery over TLS on
127.0.0.1 against a fake token endpoint (verifies the RS256 assertion) and a fake send endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wasmhost.providers._jwt_oauth import GoogleTokenCache
from wasmhost.providers.fcm import MAX_FCM_PAYLOAD, FcmSpec, MessageRefused, build_message, classify_response
from wasmhost.providers.pool import ProviderPool
from wasmhost.push import CredentialsError, Delivery, FailureKind, Manager, PushMessage, ResolvedConfig, RetryPolicy
from wasmhost.store import SQLiteStore
from wasmhost.testing.apns import make_ca
from wasmhost.testing.fcm import FakeFCM, make_service_account


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, str]:
    """(server SSL context, server cert+key PEM path for hypercorn, CA PEM for ca_bundle)."""
    ca, ctx, ca_pem = make_ca()
    path = tmp_path_factory.mktemp("tls") / "server.pem"
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    path.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    return ctx, str(path), ca_pem


@pytest.fixture
async def fake(tls: tuple[Any, str, str]) -> AsyncIterator[FakeFCM]:
    server = await FakeFCM(tls[0], tls[1]).start()
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
def account(fake: FakeFCM) -> dict[str, Any]:
    doc, public = make_service_account(fake.token_uri)
    fake.add_account(doc, public)
    return doc


@pytest.fixture
def spec() -> FcmSpec:
    return FcmSpec(allow_private_endpoints=True)


@pytest.fixture
def live_doc(spec: FcmSpec, fake: FakeFCM, account: dict[str, Any], tls: tuple[Any, str, str]) -> dict[str, Any]:
    return spec.validate({"service_account": account, "endpoint": fake.url, "ca_bundle": tls[2]})


def _delivery(token: str, message: PushMessage | None = None) -> Delivery:
    return Delivery("acme", "u1", "d1", "row1", token, message or PushMessage(title="Hi", body="there"))


def _static_account(**over: Any) -> dict[str, Any]:
    doc, _ = make_service_account("https://oauth2.googleapis.com/token")
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


# -- credentials --------------------------------------------------------------------------------


def test_validate_keeps_what_is_needed_and_accepts_the_json_text() -> None:
    account = {**_static_account(), "auth_uri": "https://accounts.google.com/o/oauth2/auth"}
    doc = FcmSpec().validate({"service_account": json.dumps(account)})
    assert set(doc["service_account"]) == {"type", "project_id", "client_email", "private_key", "token_uri",
                                           "private_key_id"}
    assert doc["service_account"]["token_uri"] == "https://oauth2.googleapis.com/token"


@pytest.mark.parametrize(("change", "field"), [
    ({"project_id": None}, "project_id"),
    ({"project_id": "Bad Project/../x"}, "project_id"),
    ({"client_email": "nobody"}, "client_email"),
    ({"private_key": None}, "private_key"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"}, "private_key"),
    ({"token_uri": "http://oauth2.googleapis.com/token"}, "token_uri"),
    ({"token_uri": "https://10.0.0.1/token"}, "token_uri"),
    ({"type": "authorized_user"}, "type"),
    ({"surprise": 1}, "surprise"),
])
def test_validate_rejects_bad_service_accounts_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CredentialsError, match=field):
        FcmSpec().validate({"service_account": _static_account(**change)})


def test_validate_requires_an_rsa_key_and_never_echoes_it() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(CredentialsError, match="RSA") as info:
        FcmSpec().validate({"service_account": _static_account(private_key=pem)})
    assert pem.splitlines()[1] not in str(info.value)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(CredentialsError, match="2048"):
        FcmSpec().validate({"service_account": _static_account(private_key=small)})


@pytest.mark.parametrize(("document", "field"), [
    ({}, "service_account"),
    ({"service_account": "{not json"}, "service_account"),
    ({"service_account": _static_account(), "endpoint": "https://fcm.example.com/v1"}, "endpoint"),
    ({"service_account": _static_account(), "endpoint": "https://127.0.0.1:1"}, "endpoint"),
    ({"service_account": _static_account(), "ca_bundle": 5}, "ca_bundle"),
    ({"service_account": _static_account(), "server_key": "legacy"}, "server_key"),
])
def test_validate_rejects_bad_documents(document: dict[str, Any], field: str) -> None:
    with pytest.raises(CredentialsError, match=field):
        FcmSpec().validate(document)


def test_redacted_view_never_echoes_the_key() -> None:
    spec = FcmSpec()
    doc = spec.validate({"service_account": _static_account()})
    view = spec.redact(doc)
    assert view["service_account"]["has_private_key"] is True and view["has_ca_bundle"] is False
    assert view["service_account"]["project_id"] == "demo-project"
    assert "PRIVATE KEY" not in json.dumps(view) and "private_key" not in view["service_account"]


@pytest.mark.parametrize(("token", "ok"), [
    ("fcm-token:APA91b" + "x" * 140, True), ("a" * 4096, True), ("a" * 4097, False), ("", False),
    ("has space", False), ("tab\there", False), ("non-ascii-é", False),
])
def test_registration_tokens(token: str, ok: bool) -> None:
    if ok:
        assert FcmSpec().validate_token(token, None) == token
    else:
        with pytest.raises(CredentialsError, match="token"):
            FcmSpec().validate_token(token, None)


# -- message building ---------------------------------------------------------------------------


def test_data_values_are_strings_and_overrides_apply() -> None:
    msg = PushMessage(title="T", body="B", data={"n": 1, "obj": {"a": [1]}, "s": "x", "flag": True},
                      badge=2, sound="ping", channel="chat", priority="high", ttl_seconds=60, message_id="m1")
    out = build_message("tok", msg)["message"]
    assert out["token"] == "tok" and out["notification"] == {"title": "T", "body": "B"}
    assert out["data"] == {"n": "1", "obj": '{"a":[1]}', "s": "x", "flag": "true"}
    assert out["android"] == {"priority": "HIGH", "ttl": "60s", "collapse_key": "m1",
                              "notification": {"channel_id": "chat", "sound": "ping", "tag": "m1"}}
    assert out["apns"]["headers"]["apns-priority"] == "10" and out["apns"]["headers"]["apns-collapse-id"] == "m1"
    assert out["apns"]["payload"] == {"aps": {"badge": 2, "sound": "ping", "thread-id": "chat"}}
    assert out["webpush"]["headers"] == {"Urgency": "high", "TTL": "60", "Topic": "m1"}


def test_content_available_only_is_a_background_apns_override() -> None:
    out = build_message("tok", PushMessage(content_available=True, data={"sync": "1"}))["message"]
    assert out["apns"]["headers"] == {"apns-priority": "5", "apns-push-type": "background"}
    assert "notification" not in out and out["android"]["priority"] == "NORMAL"


@pytest.mark.parametrize("key", ["from", "gcm", "google.sent_time", "message_type"])
def test_reserved_data_keys_are_refused(key: str) -> None:
    with pytest.raises(MessageRefused, match="reserved"):
        build_message("tok", PushMessage(title="x", data={key: "v"}))


def test_payloads_over_4096_bytes_are_refused() -> None:
    with pytest.raises(MessageRefused) as info:
        build_message("tok", PushMessage(title="x", data={"pad": "y" * MAX_FCM_PAYLOAD}))
    assert info.value.reason == "PayloadTooLarge"


def _status(http: int, status: str, code: str = "", message: str = "") -> bytes:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}] if code else []
    return json.dumps({"error": {"code": http, "status": status, "message": message, "details": details}}).encode()


@pytest.mark.parametrize(("status", "body", "kind", "reason"), [
    (404, _status(404, "NOT_FOUND", "UNREGISTERED"), FailureKind.DEAD_TARGET, "UNREGISTERED"),
    (403, _status(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"), FailureKind.DEAD_TARGET, "SENDER_ID_MISMATCH"),
    (400, _status(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "The registration token is not a valid FCM "
                  "registration token"), FailureKind.DEAD_TARGET, "InvalidRegistration"),
    (400, _status(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad ttl"), FailureKind.PERMANENT, "INVALID_ARGUMENT"),
    (429, _status(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), FailureKind.TRANSIENT, "QUOTA_EXCEEDED"),
    (503, _status(503, "UNAVAILABLE", "UNAVAILABLE"), FailureKind.TRANSIENT, "UNAVAILABLE"),
    (500, _status(500, "INTERNAL", "INTERNAL"), FailureKind.TRANSIENT, "INTERNAL"),
    (502, b"<html>bad gateway</html>", FailureKind.TRANSIENT, "HTTP502"),
    (401, _status(401, "UNAUTHENTICATED"), FailureKind.CREDENTIALS, "UNAUTHENTICATED"),
    (401, _status(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), FailureKind.CREDENTIALS,
     "THIRD_PARTY_AUTH_ERROR"),
    (403, _status(403, "PERMISSION_DENIED"), FailureKind.CREDENTIALS, "PERMISSION_DENIED"),
])
def test_classification(status: int, body: bytes, kind: FailureKind, reason: str) -> None:
    outcome = classify_response(status, body, {"retry-after": "3"})
    assert (outcome.kind, outcome.reason) == (kind, reason)
    if kind is FailureKind.TRANSIENT:
        assert outcome.retry_after == 3


# -- over the wire ------------------------------------------------------------------------------


async def test_send_passes_the_fakes_checks(spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM) -> None:
    provider = spec.build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    try:
        [out] = await provider.send([_delivery("tok-1", PushMessage(title="T", data={"n": 5, "s": "x"}))])
    finally:
        await provider.aclose()
    assert out.success, fake.errors
    assert fake.seen[0]["data"] == {"n": "5", "s": "x"} and fake.seen[0]["token"] == "tok-1"
    assert fake.token_requests == 1


async def _manager(store: SQLiteStore, spec: FcmSpec, doc: dict[str, Any], devices: int) -> Manager:
    await store.create_namespace("acme")
    await store.put_credentials("acme", "fcm", doc)
    store.max_devices_per_user = max(devices, store.max_devices_per_user)  # batching needs many
    for i in range(devices):
        await store.register_device("acme", "u1", f"d{i}", "fcm", f"tok-{i}")
    return Manager(store, ProviderPool([spec]), retry=RetryPolicy(max_attempts=3, base_delay=0.01))


async def test_one_connection_and_one_oauth_token_across_500_sends_and_a_rebuild(
    sqlite_store: SQLiteStore, spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM
) -> None:
    manager = await _manager(sqlite_store, spec, live_doc, 250)
    try:
        first = await manager.send_to_user("acme", "u1", PushMessage(title="one"))
        manager.invalidate("acme")
        second = await manager.send_to_user("acme", "u1", PushMessage(title="two"))
    finally:
        await manager.aclose()
    assert first.devices_succeeded == second.devices_succeeded == 250, fake.errors
    assert len(fake.seen) == 500 and fake.connections == 1
    assert fake.token_requests == 1 and len(fake.bearers) == 1 and spec.tokens.fetches == 1


async def test_the_token_is_refreshed_before_expiry_by_a_single_request(
    spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM
) -> None:
    fake.expires_in = 6  # refreshed at half its life: after 3 s (each batch below has 3 s, even on a busy machine)
    provider = spec.build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    try:
        assert all(o.success for o in await provider.send([_delivery(f"a{i}") for i in range(20)]))
        await asyncio.sleep(3.2)
        later = await provider.send([_delivery(f"b{i}") for i in range(100)])
    finally:
        await provider.aclose()
    assert all(o.success for o in later), fake.errors
    assert fake.token_requests == 2 and len(fake.bearers) == 2


async def test_unauthenticated_refreshes_once_and_succeeds(spec: FcmSpec, live_doc: dict[str, Any],
                                                           fake: FakeFCM) -> None:
    provider = spec.build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    fake.script["tok"] = ["unauthenticated"]
    try:
        [out] = await provider.send([_delivery("tok")])
    finally:
        await provider.aclose()
    assert out.success and fake.token_requests == 2


@pytest.mark.parametrize(("failure", "reason"), [("unregistered", "UNREGISTERED"),
                                                 ("sender-mismatch", "SENDER_ID_MISMATCH"),
                                                 ("invalid-token", "InvalidRegistration")])
async def test_dead_tokens_are_pruned(sqlite_store: SQLiteStore, spec: FcmSpec, live_doc: dict[str, Any],
                                      fake: FakeFCM, failure: str, reason: str) -> None:
    manager = await _manager(sqlite_store, spec, live_doc, 2)
    fake.script["tok-0"] = [failure]
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    dead = next(r for r in report.results if r.device_id == "d0")
    assert dead.unregistered and dead.reason == reason and dead.attempts == 1
    assert [d.device_id for d in await sqlite_store.list_user_devices("acme", "u1")] == ["d1"]


@pytest.mark.parametrize("failure", ["quota", "unavailable", "internal", "drop"])
async def test_transient_failures_are_retried_and_then_succeed(
    sqlite_store: SQLiteStore, spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM, failure: str
) -> None:
    manager = await _manager(sqlite_store, spec, live_doc, 1)
    fake.script["tok-0"] = [failure]
    started = time.monotonic()
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert result.success and result.attempts == 2
    if failure in ("quota", "unavailable"):
        assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured


async def test_permanent_failures_are_not_retried(
    sqlite_store: SQLiteStore, spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM
) -> None:
    manager = await _manager(sqlite_store, spec, live_doc, 1)
    fake.script["tok-0"] = ["bad-request", "ok"]
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert not result.success and not result.unregistered and result.attempts == 1 and len(fake.seen) == 1


async def test_a_refusing_token_endpoint_fails_fast_for_a_cooldown(
    spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM
) -> None:
    fake.refuse_tokens = True
    provider = spec.build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    try:
        [first] = await provider.send([_delivery("tok")])
        later = await provider.send([_delivery(f"t{i}") for i in range(10)])
    finally:
        await provider.aclose()
    assert first.kind is FailureKind.CREDENTIALS and first.reason == "TokenRefused" and "invalid_grant" in first.message
    assert all(o.kind is FailureKind.CREDENTIALS for o in later)
    assert fake.token_requests == 1 and fake.seen == []


async def test_permission_denied_trips_the_breaker(spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM) -> None:
    provider = spec.build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    fake.script["tok"] = ["permission-denied"]
    try:
        [first] = await provider.send([_delivery("tok")])
        later = await provider.send([_delivery(f"t{i}") for i in range(10)])
    finally:
        await provider.aclose()
    assert first.reason == "PERMISSION_DENIED" and all(o.kind is FailureKind.CREDENTIALS for o in later)
    assert len(fake.seen) == 1


async def test_tokens_are_never_shared_between_different_keys(fake: FakeFCM, tls: tuple[Any, str, str]) -> None:
    """A tenant naming another tenant's client_email with its own key must not get the other's token."""
    cache = GoogleTokenCache()
    spec = FcmSpec(tokens=cache, allow_private_endpoints=True)
    real, public = make_service_account(fake.token_uri)
    fake.add_account(real, public)
    forged, _ = make_service_account(fake.token_uri)
    forged["client_email"] = real["client_email"]
    providers = [spec.build(ResolvedConfig(ns, credentials={"fcm": d}), d) for ns, d in (
        ("good", spec.validate({"service_account": real, "endpoint": fake.url, "ca_bundle": tls[2]})),
        ("evil", spec.validate({"service_account": forged, "endpoint": fake.url, "ca_bundle": tls[2]})),
    )]
    try:
        [good] = await providers[0].send([_delivery("tok")])
        [evil] = await providers[1].send([_delivery("tok")])
    finally:
        for p in providers:
            await p.aclose()
    assert good.success
    assert not evil.success and evil.kind is FailureKind.CREDENTIALS and len(fake.seen) == 1


async def test_the_guard_refuses_a_private_token_uri_at_connect_time(live_doc: dict[str, Any], fake: FakeFCM) -> None:
    provider = FcmSpec().build(ResolvedConfig("acme", credentials={"fcm": live_doc}), live_doc)
    try:
        [out] = await provider.send([_delivery("tok")])
    finally:
        await provider.aclose()
    assert out.kind is FailureKind.PERMANENT and out.reason == "BlockedURL"
    assert fake.token_requests == 0 and fake.connections == 0


async def test_no_token_key_or_url_in_reports_logs_or_exceptions(
    sqlite_store: SQLiteStore, spec: FcmSpec, live_doc: dict[str, Any], fake: FakeFCM,
    caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = await _manager(sqlite_store, spec, live_doc, 6)
    fake.script.update({"tok-0": ["unregistered"], "tok-2": ["bad-request"], "tok-3": ["unavailable"] * 3,
                        "tok-4": ["unauthenticated", "unauthenticated"], "tok-5": ["internal"] * 3})
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    text = report.to_json() + caplog.text
    assert not report.ok and any(r.unregistered for r in report.results)
    secrets = [f"tok-{i}" for i in range(6)] + list(fake.issued) + [
        live_doc["service_account"]["private_key"].splitlines()[1], fake.url, fake.token_uri]
    for secret in secrets:
        assert secret not in text
