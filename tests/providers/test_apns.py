"""APNs: credentials, payloads and classification (unit), then delivery over TLS + HTTP/2 on 127.0.0.1
against a fake that verifies the ES256 provider token, headers and size limits."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wasmhost.providers.apns import (
    MAX_ALERT_PAYLOAD,
    VOIP_RING_WINDOW,
    ApnsSpec,
    PayloadRefused,
    apns_specs,
    build_request,
    classify_response,
)
from wasmhost.providers.pool import ProviderPool
from wasmhost.push import CredentialsError, Delivery, FailureKind, Manager, PushMessage, ResolvedConfig, RetryPolicy
from wasmhost.store import SQLiteStore
from wasmhost.testing.apns import FakeAPNs, make_ca

TEAM, KEY_ID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.app"


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def p8_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def tls() -> tuple[Any, Any, str]:
    return make_ca()


@pytest.fixture
async def fake(tls: tuple[Any, Any, str], p8_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[FakeAPNs]:
    server = await FakeAPNs(tls[1]).start()
    server.add_key(TEAM, KEY_ID, p8_key.public_key())
    try:
        yield server
    finally:
        await server.aclose()


def _doc(key: ec.EllipticCurvePrivateKey, **over: Any) -> dict[str, Any]:
    doc = {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": BUNDLE, "p8_key": _pem(key), "environment": "sandbox"}
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.fixture
def specs() -> list[ApnsSpec]:
    return apns_specs(allow_private_endpoints=True)


@pytest.fixture
def live_doc(specs: list[ApnsSpec], fake: FakeAPNs, tls: tuple[Any, Any, str],
             p8_key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return specs[0].validate(_doc(p8_key, endpoint=fake.url, ca_bundle=tls[2]))


def _token(i: int) -> str:
    return f"{i:064x}"


def _delivery(token: str, message: PushMessage | None = None) -> Delivery:
    return Delivery("acme", "u1", "d1", "row1", token, message or PushMessage(title="Hi", body="there"))


# -- credentials --------------------------------------------------------------------------------


def test_validate_normalises_a_good_document(p8_key: ec.EllipticCurvePrivateKey) -> None:
    doc = ApnsSpec().validate(_doc(p8_key, environment="production"))
    assert doc["team_id"] == TEAM and doc["environment"] == "production" and "endpoint" not in doc


@pytest.mark.parametrize(("change", "field"), [
    ({"team_id": None}, "team_id"),
    ({"team_id": "short"}, "team_id"),
    ({"key_id": "key1234567"}, "key_id"),
    ({"bundle_id": "nodots"}, "bundle_id"),
    ({"bundle_id": "com.example.app.voip"}, "bundle_id"),
    ({"p8_key": None}, "p8_key"),
    ({"p8_key": "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49"}, "p8_key"),
    ({"environment": "staging"}, "environment"),
    ({"environment": None}, "environment"),
    ({"endpoint": "http://api.example.com"}, "endpoint"),
    ({"endpoint": "https://api.example.com/3/device"}, "endpoint"),
    ({"endpoint": "https://127.0.0.1:8443"}, "endpoint"),
    ({"endpoint": "https://169.254.169.254"}, "endpoint"),
    ({"ca_bundle": "not a pem"}, "ca_bundle"),
    ({"extra": 1}, "extra"),
])
def test_validate_rejects_bad_fields_naming_the_field(
    p8_key: ec.EllipticCurvePrivateKey, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(CredentialsError, match=field):
        ApnsSpec().validate(_doc(p8_key, **change))


@pytest.mark.parametrize("key", [
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ec.generate_private_key(ec.SECP384R1()),
])
def test_validate_parses_the_key_and_requires_p256(key: Any) -> None:
    pem = _pem(key)
    with pytest.raises(CredentialsError, match="P-256") as info:
        ApnsSpec().validate({"team_id": TEAM, "key_id": KEY_ID, "bundle_id": BUNDLE, "p8_key": pem,
                             "environment": "sandbox"})
    assert pem.splitlines()[1] not in str(info.value)


def test_redacted_view_never_echoes_the_key(p8_key: ec.EllipticCurvePrivateKey, tls: tuple[Any, Any, str]) -> None:
    spec = ApnsSpec(allow_private_endpoints=True)
    doc = spec.validate(_doc(p8_key, endpoint="https://127.0.0.1:9", ca_bundle=tls[2]))
    view = spec.redact(doc)
    assert view == {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": BUNDLE, "environment": "sandbox",
                    "endpoint": "https://127.0.0.1:9", "has_p8_key": True, "has_ca_bundle": True}
    assert "PRIVATE" not in json.dumps(view)


@pytest.mark.parametrize(("token", "ok"), [
    ("AB" * 32, True), ("ab" * 100, True), ("ab" * 31, False), ("ab" * 101, False), ("a" * 65, False),
    ("zz" * 32, False), ("", False), ("ab" * 16 + "/" + "ab" * 16, False),
])
def test_device_tokens_are_hex_of_even_length(token: str, ok: bool) -> None:
    spec = ApnsSpec()
    if ok:
        assert spec.validate_token(f" {token} ", None) == token.lower()
    else:
        with pytest.raises(CredentialsError, match="token"):
            spec.validate_token(token, None)


def test_voip_uses_the_apns_document_unless_it_has_its_own(p8_key: ec.EllipticCurvePrivateKey) -> None:
    alert, voip = apns_specs()
    apns_doc, voip_doc = _doc(p8_key), _doc(p8_key, bundle_id="com.example.voipapp")
    assert voip.document_for(ResolvedConfig("ns", credentials={"apns": apns_doc})) is not None
    assert voip.document_for(ResolvedConfig("ns", credentials={"apns": apns_doc, "apns_voip": voip_doc})) == voip_doc
    assert alert.document_for(ResolvedConfig("ns", credentials={"apns_voip": voip_doc})) is None
    assert alert.tokens is voip.tokens


# -- payloads -----------------------------------------------------------------------------------


def test_alert_payload_and_headers() -> None:
    msg = PushMessage(title="T", body="B", badge=3, sound="default", channel="chat", data={"k": 1, "aps": "x"},
                      message_id="m1", ttl_seconds=60)
    req = build_request(msg, bundle_id=BUNDLE, voip=False, now=1000)
    assert req.headers == {"apns-topic": BUNDLE, "apns-push-type": "alert", "apns-priority": "10",
                           "apns-expiration": "1060", "apns-collapse-id": "m1"}
    assert json.loads(req.body) == {"k": 1, "aps": {"alert": {"title": "T", "body": "B"}, "badge": 3,
                                                    "sound": "default", "thread-id": "chat"}}


def test_content_available_only_is_a_background_push_at_priority_5() -> None:
    req = build_request(PushMessage(content_available=True, data={"sync": True}), bundle_id=BUNDLE, voip=False)
    assert req.headers["apns-push-type"] == "background" and req.headers["apns-priority"] == "5"
    assert json.loads(req.body)["aps"] == {"content-available": 1}


def test_voip_topic_priority_and_ring_window() -> None:
    req = build_request(PushMessage(data={"call": "x"}, ttl_seconds=3600), bundle_id=BUNDLE, voip=True, now=1000)
    assert req.headers["apns-topic"] == BUNDLE + ".voip" and req.headers["apns-push-type"] == "voip"
    assert req.headers["apns-priority"] == "10"
    assert req.headers["apns-expiration"] == str(1000 + VOIP_RING_WINDOW)
    assert build_request(PushMessage(), bundle_id=BUNDLE, voip=True, now=5).headers["apns-expiration"] == "35"
    assert build_request(PushMessage(title="x", ttl_seconds=0), bundle_id=BUNDLE, voip=False).headers[
        "apns-expiration"] == "0"


def test_an_alert_with_nothing_visible_is_refused() -> None:
    with pytest.raises(PayloadRefused) as info:
        build_request(PushMessage(data={"only": "data"}), bundle_id=BUNDLE, voip=False)
    assert info.value.reason == "EmptyContent"


@pytest.mark.parametrize("collapse_id", ["a\nb", " padded", "nul\x00"])
def test_a_collapse_id_that_is_not_a_clean_header_value_is_refused(collapse_id: str) -> None:
    with pytest.raises(PayloadRefused) as info:
        build_request(PushMessage(title="x", message_id=collapse_id), bundle_id=BUNDLE, voip=False)
    assert info.value.reason == "BadCollapseId"


def test_payload_limits_are_4096_for_alerts_and_5120_for_voip() -> None:
    big = PushMessage(title="x", data={"pad": "y" * (MAX_ALERT_PAYLOAD - 20)})
    with pytest.raises(PayloadRefused, match="4096"):
        build_request(big, bundle_id=BUNDLE, voip=False)
    assert len(build_request(big, bundle_id=BUNDLE, voip=True).body) <= 5120
    with pytest.raises(PayloadRefused, match="5120"):
        build_request(PushMessage(data={"pad": "y" * 5200}), bundle_id=BUNDLE, voip=True)


@pytest.mark.parametrize(("status", "body", "kind", "reason"), [
    (410, {"reason": "Unregistered", "timestamp": 1_700_000_000_000}, FailureKind.DEAD_TARGET, "Unregistered"),
    (410, {"reason": "ExpiredToken", "timestamp": 1_700_000_000_000}, FailureKind.DEAD_TARGET, "ExpiredToken"),
    (400, {"reason": "BadDeviceToken"}, FailureKind.PERMANENT, "BadDeviceToken"),
    (400, {"reason": "DeviceTokenNotForTopic"}, FailureKind.PERMANENT, "DeviceTokenNotForTopic"),
    (400, {"reason": "BadCollapseId"}, FailureKind.PERMANENT, "BadCollapseId"),
    (400, {"reason": "IdleTimeout"}, FailureKind.TRANSIENT, "IdleTimeout"),
    (403, {"reason": "InvalidProviderToken"}, FailureKind.CREDENTIALS, "InvalidProviderToken"),
    (403, {"reason": "ExpiredProviderToken"}, FailureKind.CREDENTIALS, "ExpiredProviderToken"),
    (413, {"reason": "PayloadTooLarge"}, FailureKind.PERMANENT, "PayloadTooLarge"),
    (429, {"reason": "TooManyRequests"}, FailureKind.TRANSIENT, "TooManyRequests"),
    (500, {"reason": "InternalServerError"}, FailureKind.TRANSIENT, "InternalServerError"),
    (503, None, FailureKind.TRANSIENT, "HTTP503"),
])
def test_classification(status: int, body: Any, kind: FailureKind, reason: str) -> None:
    outcome = classify_response(status, json.dumps(body).encode() if body else b"", {"retry-after": "7"})
    assert (outcome.kind, outcome.reason) == (kind, reason)
    if status == 410:
        assert outcome.dead_since == 1_700_000_000.0
    if kind is FailureKind.TRANSIENT and status != 400:
        assert outcome.retry_after == 7


@pytest.mark.parametrize(("reason", "hint"), [("BadDeviceToken", "environment"),
                                              ("DeviceTokenNotForTopic", "bundle_id")])
def test_config_shaped_token_errors_say_what_to_check(reason: str, hint: str) -> None:
    # A wrong environment (or bundle id) answers this for every device: it must not read as "dead token".
    outcome = classify_response(400, json.dumps({"reason": reason}).encode(), {})
    assert outcome.kind is FailureKind.PERMANENT and outcome.dead_since is None
    assert hint in outcome.message


# -- over the wire ------------------------------------------------------------------------------


async def test_send_reaches_the_fake_with_what_apple_checks(specs: list[ApnsSpec], live_doc: dict[str, Any],
                                                            fake: FakeAPNs) -> None:
    cfg = ResolvedConfig("acme", credentials={"apns": live_doc})
    alert, voip = specs[0].build(cfg, live_doc), specs[1].build(cfg, live_doc)
    try:
        [a] = await alert.send([_delivery(_token(1))])
        [v] = await voip.send([_delivery(_token(2), PushMessage(data={"call": "c1"}))])
        [b] = await alert.send([_delivery(_token(3), PushMessage(content_available=True))])
    finally:
        await alert.aclose()
        await voip.aclose()
    assert a.success and v.success and b.success, fake.errors
    assert fake.errors == []
    seen = {s.token: s for s in fake.seen}
    assert seen[_token(1)].headers["apns-topic"] == BUNDLE
    assert seen[_token(1)].payload == {"aps": {"alert": {"title": "Hi", "body": "there"}}}
    assert seen[_token(2)].headers["apns-topic"] == BUNDLE + ".voip"
    assert seen[_token(3)].headers["apns-priority"] == "5"
    assert len(fake.jwts) == 1  # alert and VoIP share the key's one provider token


async def test_an_empty_alert_is_refused_without_a_request(specs: list[ApnsSpec], live_doc: dict[str, Any],
                                                           fake: FakeAPNs) -> None:
    provider = specs[0].build(ResolvedConfig("acme", credentials={"apns": live_doc}), live_doc)
    try:
        [out] = await provider.send([_delivery(_token(1), PushMessage(data={"x": 1}))])
    finally:
        await provider.aclose()
    assert out.kind is FailureKind.PERMANENT and out.reason == "EmptyContent"
    assert fake.connections == 0 and fake.seen == []


async def _manager(store: SQLiteStore, specs: list[ApnsSpec], doc: dict[str, Any], devices: int,
                   provider: str = "apns") -> tuple[Manager, ProviderPool]:
    await store.create_namespace("acme")
    await store.put_credentials("acme", "apns", doc)
    store.max_devices_per_user = max(devices, store.max_devices_per_user)  # batching needs many
    for i in range(devices):
        await store.register_device("acme", "u1", f"d{i}", provider, _token(i))
    factory = ProviderPool(specs)
    return Manager(store, factory, retry=RetryPolicy(max_attempts=3, base_delay=0.01)), factory


async def test_one_connection_and_one_jwt_across_500_sends_and_a_dispatcher_rebuild(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    manager, factory = await _manager(sqlite_store, specs, live_doc, 250)
    try:
        first = await manager.send_to_user("acme", "u1", PushMessage(title="one"))
        manager.invalidate("acme")  # what a config change elsewhere (or the TTL) does
        second = await manager.send_to_user("acme", "u1", PushMessage(title="two"))
    finally:
        await manager.aclose()
    assert first.devices_succeeded == second.devices_succeeded == 250, fake.errors
    assert len(fake.seen) == 500
    assert fake.connections == 1
    assert len(fake.jwts) == 1 and specs[0].tokens.minted == 1
    assert factory.builds == 2  # apns + apns_voip once each, reused by the rebuild


async def test_a_changed_document_gets_a_new_client_but_keeps_the_jwt(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    manager, _ = await _manager(sqlite_store, specs, live_doc, 1)
    try:
        await manager.send_to_user("acme", "u1", PushMessage(title="one"))
        old = (await manager.dispatcher_for("acme")).providers["apns"]
        await sqlite_store.put_credentials("acme", "apns", {**live_doc, "bundle_id": "com.example.other"})
        manager.invalidate("acme")
        report = await manager.send_to_user("acme", "u1", PushMessage(title="two"))
        assert report.ok
        assert old.client.is_closed  # type: ignore[attr-defined]
    finally:
        await manager.aclose()
    assert fake.connections == 2 and len(fake.jwts) == 1
    assert fake.seen[-1].headers["apns-topic"] == "com.example.other"


@pytest.mark.parametrize(("offset", "pruned"), [(+3600, True), (-3600, False)])
async def test_a_410_prunes_only_when_newer_than_the_registration(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs,
    offset: int, pruned: bool,
) -> None:
    manager, _ = await _manager(sqlite_store, specs, live_doc, 1)
    fake.script[_token(0)] = ["dead"]
    fake.dead_timestamp_ms = int((time.time() + offset) * 1000)
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert not result.success and result.unregistered and result.reason == "Unregistered" and result.attempts == 1
    remaining = await sqlite_store.list_user_devices("acme", "u1")
    assert (remaining == []) is pruned


@pytest.mark.parametrize("failure", ["unavailable", "rate-limit", "drop", "goaway-processed"])
async def test_transient_failures_are_retried_and_then_succeed(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs, failure: str
) -> None:
    manager, _ = await _manager(sqlite_store, specs, live_doc, 1)
    fake.script[_token(0)] = [failure]
    started = time.monotonic()
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert result.success and result.attempts == 2
    if failure == "rate-limit":
        assert time.monotonic() - started >= 0.9  # Retry-After: 1 was honoured


async def test_a_goaway_before_the_stream_is_retried_on_a_new_connection_at_once(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    manager, _ = await _manager(sqlite_store, specs, live_doc, 1)
    fake.script[_token(0)] = ["goaway"]  # GOAWAY whose last_stream_id is below ours: APNs never processed it
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert result.success and result.attempts == 1  # the client re-sent it; no dispatcher backoff
    assert fake.connections == 2 and len(fake.jwts) == 1


@pytest.mark.parametrize("failure", ["bad-request", "bad-token"])
async def test_permanent_failures_are_not_retried(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs, failure: str
) -> None:
    manager, _ = await _manager(sqlite_store, specs, live_doc, 1)
    fake.script[_token(0)] = [failure, "ok"]
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    [result] = report.results
    assert not result.success and result.attempts == 1 and len(fake.seen) == 1
    assert not result.unregistered
    assert len(await sqlite_store.list_user_devices("acme", "u1")) == 1  # only a 410 prunes
    if failure == "bad-token":
        assert "environment" in result.message


async def test_expired_provider_token_is_reminted_once(
    specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    provider = specs[0].build(ResolvedConfig("acme", credentials={"apns": live_doc}), live_doc)
    fake.script[_token(1)] = ["expired-auth"]
    try:
        [first] = await provider.send([_delivery(_token(1))])
        [again] = await provider.send([_delivery(_token(2))])
    finally:
        await provider.aclose()
    assert first.success and again.success, fake.errors
    assert specs[0].tokens.minted == 2 and len(fake.jwts) == 2
    assert "TooManyProviderTokenUpdates" not in fake.errors


async def test_refused_credentials_fail_fast_for_a_cooldown(
    specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    provider = specs[0].build(ResolvedConfig("acme", credentials={"apns": live_doc}), live_doc)
    fake.script[_token(1)] = ["invalid-auth"]
    try:
        [first] = await provider.send([_delivery(_token(1))])
        later = await provider.send([_delivery(_token(i)) for i in range(2, 12)])
    finally:
        await provider.aclose()
    assert first.kind is FailureKind.CREDENTIALS and first.reason == "InvalidProviderToken"
    assert all(o.kind is FailureKind.CREDENTIALS and o.reason == "InvalidProviderToken" for o in later)
    assert len(fake.seen) == 1  # nothing was sent while the breaker was open


async def test_an_untrusted_certificate_is_a_credentials_failure(
    specs: list[ApnsSpec], fake: FakeAPNs, p8_key: ec.EllipticCurvePrivateKey
) -> None:
    other_ca = make_ca()[2]
    doc = specs[0].validate(_doc(p8_key, endpoint=fake.url, ca_bundle=other_ca))
    provider = specs[0].build(ResolvedConfig("acme", credentials={"apns": doc}), doc)
    try:
        [out] = await provider.send([_delivery(_token(1))])
    finally:
        await provider.aclose()
    assert out.kind is FailureKind.CREDENTIALS and out.reason == "TLSVerifyFailed"


async def test_the_guard_refuses_a_private_endpoint_at_connect_time(
    live_doc: dict[str, Any], fake: FakeAPNs
) -> None:
    spec = ApnsSpec(allow_private_endpoints=False)  # the doc was saved when private endpoints were allowed
    provider = spec.build(ResolvedConfig("acme", credentials={"apns": live_doc}), live_doc)
    try:
        [out] = await provider.send([_delivery(_token(1))])
    finally:
        await provider.aclose()
    assert out.kind is FailureKind.PERMANENT and out.reason == "BlockedURL"
    assert fake.connections == 0


async def test_no_token_key_or_url_in_reports_logs_or_exceptions(
    sqlite_store: SQLiteStore, specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    manager, _ = await _manager(sqlite_store, specs, live_doc, 6)
    # (A dropped connection fails every stream in flight on it, so it gets its own test.)
    fake.script.update({_token(0): ["dead"], _token(2): ["bad-request"], _token(3): ["unavailable"] * 3,
                        _token(4): ["invalid-auth"], _token(5): ["bad-token"]})
    fake.dead_timestamp_ms = int((time.time() + 60) * 1000)
    try:
        report = await manager.send_to_user("acme", "u1", PushMessage(title="x"))
    finally:
        await manager.aclose()
    text = report.to_json() + caplog.text
    assert not report.ok and any(r.unregistered for r in report.results)
    assert "environment" in text  # the BadDeviceToken hint reached the report
    secrets = [_token(i) for i in range(6)] + list(fake.jwts) + [live_doc["p8_key"].splitlines()[1], fake.url]
    for secret in secrets:
        assert secret not in text


async def test_a_goaway_and_a_dropped_connection_log_nothing_secret(
    specs: list[ApnsSpec], live_doc: dict[str, Any], fake: FakeAPNs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = specs[0].build(ResolvedConfig("acme", credentials={"apns": live_doc}), live_doc)
    fake.script.update({_token(1): ["goaway-processed"], _token(2): ["drop"]})
    try:
        outcomes = [*(await provider.send([_delivery(_token(1))])), *(await provider.send([_delivery(_token(2))]))]
    finally:
        await provider.aclose()
    assert [(o.kind, o.reason) for o in outcomes] == [(FailureKind.TRANSIENT, "ConnectionError")] * 2
    assert "GOAWAY" in outcomes[0].message and "GOAWAY" in caplog.text
    text = caplog.text + "".join(o.message for o in outcomes)
    for secret in [_token(1), _token(2), fake.url, *fake.jwts]:
        assert secret not in text
