"""Web Push: RFC 8291 known answer, VAPID, credentials, and delivery to a fake push service on 127.0.0.1
that verifies the VAPID signature and decrypts every message with the subscription's private key."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers import ProviderPool
from wasmhost.providers._ece import MAX_PLAINTEXT, b64url_decode, b64url_encode, decrypt, encrypt
from wasmhost.providers.webpush import VapidSigner, WebPushSpec, topic_for
from wasmhost.push import CredentialsError, Manager, PushMessage, RetryPolicy
from wasmhost.push.credentials import validate_device_token
from wasmhost.store import SQLiteStore
from wasmhost.testing.webpush import Browser, FakeWebPush

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)

# RFC 8291 §5 / Appendix A, verbatim.
RFC = {
    "plaintext": b"When I grow up, I want to be a watermelon",
    "as_private": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "ua_public": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "salt": "DGv6ra1nlYgDCS1FRnbzlw",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6"
            "PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
}


def _key(b64: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(b64url_decode(b64), "big"), ec.SECP256R1())


def vapid_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# -- encryption ---------------------------------------------------------------------------------------------


def test_encryption_reproduces_the_rfc_8291_example_byte_for_byte() -> None:
    body = encrypt(RFC["plaintext"], b64url_decode(RFC["ua_public"]), b64url_decode(RFC["auth"]),
                   as_private=_key(RFC["as_private"]), salt=b64url_decode(RFC["salt"]))
    assert b64url_encode(body) == RFC["body"]
    assert decrypt(body, _key(RFC["ua_private"]), b64url_decode(RFC["auth"])) == RFC["plaintext"]


def test_an_independent_decryptor_reads_what_we_encrypt_and_body_length_is_86_plus_n_plus_17() -> None:
    browser = Browser("x")
    sub = browser.subscription("https://push.example")
    plaintext = "héllo ✓".encode() * 50
    body = encrypt(plaintext, b64url_decode(sub["keys"]["p256dh"]), browser.auth)
    assert len(body) == 86 + len(plaintext) + 17
    assert http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth,
                            version="aes128gcm") == plaintext


def test_payload_limit() -> None:
    browser = Browser("x")
    p256dh = b64url_decode(browser.subscription("https://p.example")["keys"]["p256dh"])
    assert len(encrypt(b"x" * MAX_PLAINTEXT, p256dh, browser.auth)) == 4096
    with pytest.raises(ValueError, match="limit is 3993"):
        encrypt(b"x" * (MAX_PLAINTEXT + 1), p256dh, browser.auth)


# -- VAPID ----------------------------------------------------------------------------------------------------


def test_vapid_jwt_claims_and_caching_per_origin() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = VapidSigner(key, "mailto:ops@example.com")
    now = time.time()
    header = signer.authorization("https://push.example:8443", now)
    token = header.split("t=", 1)[1].split(",", 1)[0]
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="https://push.example:8443")
    assert claims["sub"] == "mailto:ops@example.com" and now < claims["exp"] <= now + 24 * 3600
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "ES256"}
    assert header.endswith(f"k={signer.public_key}")
    assert signer.authorization("https://push.example:8443", now + 60) == header
    assert signer.authorization("https://other.example", now) != header
    assert signer.authorization("https://push.example:8443", now + 11.5 * 3600) != header  # near expiry
    assert signer.minted == 3


def test_topic_fits_rfc_8030() -> None:
    assert topic_for("order-42") == "order-42"
    long = topic_for("a collapse id with spaces and more than thirty-two characters")
    assert len(long) == 32 and long == topic_for("a collapse id with spaces and more than thirty-two characters")


# -- credentials and tokens -------------------------------------------------------------------------------


def test_credentials_validate_and_redact() -> None:
    spec = WebPushSpec()
    pem = vapid_pem()
    doc = spec.validate({"vapid_private_key": pem, "vapid_subject": "mailto:ops@example.com"})
    shown = spec.redact(doc)
    assert shown["has_vapid_private_key"] is True and "vapid_private_key" not in shown
    assert len(b64url_decode(shown["vapid_public_key"])) == 65
    assert "PRIVATE" not in json.dumps(shown)
    raw = b64url_encode(ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big"))
    assert "BEGIN PRIVATE KEY" in spec.validate({"vapid_private_key": raw, "vapid_subject": "https://x.example"})[
        "vapid_private_key"]


@pytest.mark.parametrize(("doc", "message"), [
    ({"vapid_subject": "mailto:a@b.c"}, "vapid_private_key is required"),
    ({"vapid_private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
      "vapid_subject": "mailto:a@b.c"}, "EC P-256 private key"),
    ({"vapid_private_key": ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
      "vapid_subject": "mailto:a@b.c"}, "P-256"),
    ({"vapid_private_key": vapid_pem(), "vapid_subject": "ops@example.com"}, "vapid_subject must be"),
    ({"vapid_private_key": vapid_pem(), "vapid_subject": "mailto:a@b.c", "extra": 1}, "unknown field"),
])
def test_credentials_errors_name_the_field_and_never_echo_the_key(doc: dict[str, str], message: str) -> None:
    with pytest.raises(CredentialsError, match=message) as info:
        WebPushSpec().validate(doc)
    assert "BEGIN" not in str(info.value)


def test_subscription_tokens() -> None:
    spec = WebPushSpec()
    browser = Browser("abc")
    sub = browser.subscription("https://push.example.com")
    sub["expirationTime"] = None
    assert json.loads(spec.validate_token(json.dumps(sub), None)) == browser.subscription("https://push.example.com")
    bad_cases = [
        ("not json", "subscription JSON"),
        (json.dumps({"endpoint": "https://p.example/x"}), "keys"),
        (json.dumps({**sub, "keys": {**sub["keys"], "auth": "AAAA"}}), "auth must be 16 bytes"),
        (json.dumps({**sub, "keys": {**sub["keys"], "p256dh": b64url_encode(b"\x04" + b"\x01" * 64)}}), "not a point"),
        (browser.token("http://push.example.com"), "must be https"),
        (browser.token("https://127.0.0.1:9000"), "endpoint rejected: address 127.0.0.1 is loopback"),
        (browser.token("https://169.254.169.254"), "endpoint rejected: .*link-local"),
    ]
    for token, why in bad_cases:
        with pytest.raises(CredentialsError, match=why) as info:
            spec.validate_token(token, None)
        assert "push.example.com/wp" not in str(info.value)


async def test_registration_resolves_the_endpoint_host(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: object, *a: object, **k: object) -> list[object]:
        return [(2, 1, 6, "", ("192.168.0.9", 443))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    with pytest.raises(CredentialsError, match="endpoint rejected: address 192.168.0.9 is private"):
        await validate_device_token(WebPushSpec(), Browser("a").token("https://push.evil.example"), None)


# -- delivery over real sockets -------------------------------------------------------------------------------


@pytest.fixture
async def service() -> AsyncIterator[FakeWebPush]:
    fake = await FakeWebPush().start()
    try:
        yield fake
    finally:
        await fake.aclose()


async def setup(store: SQLiteStore, service: FakeWebPush, *subs: str, allow_private_endpoints: bool = True) -> Manager:
    await store.create_namespace("acme")
    spec = WebPushSpec(allow_private_endpoints=allow_private_endpoints)
    doc = spec.validate({"vapid_private_key": vapid_pem(), "vapid_subject": "mailto:ops@example.com"})
    service.vapid_public_key = spec.redact(doc)["vapid_public_key"]
    await store.put_credentials("acme", "webpush", doc)
    for sub in subs:
        token = service.browser(sub).token(service.url)
        if allow_private_endpoints:
            token = await validate_device_token(spec, token, doc)
        await store.register_device("acme", "alice", sub, "webpush", token)
    return Manager(store, ProviderPool([spec]), retry=FAST)


async def test_delivers_encrypted_messages_the_browser_can_read(sqlite_store: SQLiteStore,
                                                                 service: FakeWebPush) -> None:
    manager = await setup(sqlite_store, service, "s1", "s2")
    message = PushMessage(title="Grüße", body="hi", data={"k": [1, 2]}, priority="high", message_id="order-42")
    report = await manager.send_to_user("acme", "alice", message)
    assert report.ok and [r.status for r in report.results] == [201, 201]
    assert sorted(r["sub"] for r in service.received) == ["s1", "s2"]
    for record in service.received:
        assert record["payload"] == {"title": "Grüße", "body": "hi", "data": {"k": [1, 2]}, "priority": "high",
                                     "message_id": "order-42"}
        assert (record["ttl"], record["urgency"], record["topic"]) == (86400, "high", "order-42")
    report = await manager.send_to_user("acme", "alice", PushMessage(body="again", ttl_seconds=60))
    assert report.ok and service.received[-1]["ttl"] == 60 and service.received[-1]["urgency"] == "normal"
    assert len(service.jwts) == 1  # one VAPID JWT for this origin, reused
    assert service.server is not None and service.server.connections <= 2  # pooled, not one per send
    await manager.aclose()


@pytest.mark.parametrize("status", ["404", "410"])
async def test_gone_subscriptions_are_pruned(sqlite_store: SQLiteStore, service: FakeWebPush, status: str) -> None:
    manager = await setup(sqlite_store, service, "alive", "gone")
    service.script["gone"] = [status]
    report = await manager.send_to_user("acme", "alice", PushMessage(body="x"))
    gone = next(r for r in report.results if r.device_id == "gone")
    assert (gone.success, gone.unregistered, gone.status, gone.attempts) == (False, True, int(status), 1)
    assert [d.device_id for d in await sqlite_store.list_user_devices("acme", "alice")] == ["alive"]
    await manager.aclose()


async def test_transient_failures_retry_honouring_retry_after(sqlite_store: SQLiteStore,
                                                              service: FakeWebPush) -> None:
    manager = await setup(sqlite_store, service, "flaky", "busy")
    service.script["flaky"] = ["drop", "500"]
    service.script["busy"] = ["429"]
    started = time.monotonic()
    report = await manager.send_to_user("acme", "alice", PushMessage(body="x"))
    assert report.ok, report.to_dict()
    assert {r.device_id: r.attempts for r in report.results} == {"flaky": 3, "busy": 2}
    assert time.monotonic() - started >= 0.9  # Retry-After: 1
    await manager.aclose()


@pytest.mark.parametrize(("action", "reason"), [("400", "HTTP 400"), ("413", "PayloadTooLarge"),
                                                ("403", "VapidKeyMismatch")])
async def test_permanent_failures_are_not_retried(sqlite_store: SQLiteStore, service: FakeWebPush, action: str,
                                                  reason: str) -> None:
    manager = await setup(sqlite_store, service, "s")
    service.script["s"] = [action] * 3
    result = (await manager.send_to_user("acme", "alice", PushMessage(body="x"))).results[0]
    assert (result.success, result.reason, result.attempts, result.unregistered) == (False, reason, 1, False)
    assert service.attempts["s"] == 1
    await manager.aclose()


async def test_a_refused_vapid_signature_pauses_sends_to_that_service(sqlite_store: SQLiteStore,
                                                                      service: FakeWebPush) -> None:
    manager = await setup(sqlite_store, service, "s")
    service.script["s"] = ["401"]
    first = (await manager.send_to_user("acme", "alice", PushMessage(body="x"))).results[0]
    assert (first.reason, first.status) == ("VapidRejected", 401)
    second = (await manager.send_to_user("acme", "alice", PushMessage(body="x"))).results[0]
    assert not second.success and "fix the credentials" in second.message
    assert service.attempts["s"] == 1
    await manager.aclose()


async def test_oversized_payload_fails_before_any_request(sqlite_store: SQLiteStore, service: FakeWebPush) -> None:
    manager = await setup(sqlite_store, service, "s")
    result = (await manager.send_to_user("acme", "alice", PushMessage(body="x" * 4000))).results[0]
    assert (result.success, result.reason, result.attempts) == (False, "MessageTooBig", 1)
    assert service.attempts["s"] == 0
    await manager.aclose()


async def test_a_loopback_endpoint_is_refused_at_connect_time_without_allow_private(
    sqlite_store: SQLiteStore, service: FakeWebPush, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    manager = await setup(sqlite_store, service, "secretSubscriptionId", allow_private_endpoints=False)
    result = (await manager.send_to_user("acme", "alice", PushMessage(body="x"))).results[0]
    assert (result.success, result.reason) == (False, "BlockedURL")
    assert service.server is not None and service.server.requests == 0


async def test_no_endpoint_or_key_in_reports_logs_or_errors(
    sqlite_store: SQLiteStore, service: FakeWebPush, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subs = ["secretSubAAA", "secretSubBBB", "secretSubCCC", "secretSubDDD"]
    manager = await setup(sqlite_store, service, *subs)
    service.script["secretSubAAA"] = ["drop"] * 3
    service.script["secretSubBBB"] = ["410"]
    service.script["secretSubCCC"] = ["400"]
    report = await manager.send_to_user("acme", "alice", PushMessage(body="x"), deadline=time.monotonic() + 5)
    await service.aclose()
    report2 = await manager.send_to_user("acme", "alice", PushMessage(body="x"), deadline=time.monotonic() + 5)
    text = report.to_json() + report2.to_json() + "\n".join(r.getMessage() for r in caplog.records)
    for sub in subs:  # (the sub ids double as device ids, which are not secret; their endpoint paths are)
        assert f"/wp/{sub}" not in text
        assert b64url_encode(service.browsers[sub].auth) not in text
    assert "/wp/" not in text
    await manager.aclose()


def test_our_decryptor_reads_pywebpush_output() -> None:
    """The fake push service decrypts with `_ece.decrypt`; check it against an independent encryptor."""
    WebPusher = pytest.importorskip("pywebpush").WebPusher  # a benchmark peer (the bench extra)

    browser = Browser("x")
    encoded = WebPusher(browser.subscription("https://push.example")).encode(b"independent plaintext")
    assert decrypt(encoded["body"], browser.private_key, browser.auth) == b"independent plaintext"


async def test_the_fake_refuses_a_jwt_for_another_audience(service: FakeWebPush) -> None:
    import httpx

    service.browser("s")
    signer = VapidSigner(ec.generate_private_key(ec.SECP256R1()), "mailto:ops@example.com")
    headers = {"Authorization": signer.authorization("https://other.example"), "TTL": "60",
               "Content-Encoding": "aes128gcm"}
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{service.url}/wp/s", content=b"x", headers=headers)
    assert response.status_code == 401 and b"audience" in response.content.lower()
