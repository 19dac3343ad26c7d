"""Tenant webhooks over real sockets: set/get/delete through the gateway, the secret shown once, bad
inputs and the SSRF guard, and signed events (verified with svix and by hand) POSTed to a loopback
receiver for a dead Web Push subscription, a permanent failure and a completed send; retries keep the
webhook-id and deliver once; an endpoint that keeps failing is disabled until a PUT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from svix.webhooks import Webhook as SvixWebhook

from wasmhost.push import QueueSettings
from wasmhost.push.webhooks import WebhookSettings
from wasmhost.testing._server import FakeServer, Request, Response
from wasmhost.testing.webpush import FakeWebPush

from .harness import GatewayServer, Tenant, create_tenant, metric, wait_for

ALL = ["delivery.failed", "delivery.dead_token", "send.completed"]
FAST_QUEUE = QueueSettings(retry_base=0.05, retry_max=0.1, poll_interval=0.05, lease_seconds=5)
FAST_HOOKS = WebhookSettings(retry_base=0.05, retry_max=0.2, poll_interval=0.05, lease_seconds=5)


class Receiver:
    """A loopback webhook endpoint: records every request; answers the scripted statuses in order, then 200
    (or `always` when set)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: list[int] = []
        self.always = 0
        self.server: FakeServer | None = None

    def handle(self, req: Request) -> Response:
        self.requests.append(req)
        status = self.script.pop(0) if self.script else (self.always or 200)
        return Response(status, b"ok" if status < 300 else b"no")

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/hooks/wasmhost"

    def bodies(self, event: str) -> list[dict[str, Any]]:
        out = []
        for r in self.requests:
            body = json.loads(r.body)
            if body["type"] == event:
                out.append(body)
        return out


def _serve(gw: GatewayServer) -> Receiver:
    receiver = Receiver()
    receiver.server = gw.run(FakeServer(receiver.handle).start())
    return receiver


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    server = GatewayServer(tmp_path_factory.mktemp("webhooks"), allow_private_endpoints=True, queue=FAST_QUEUE,
                           webhooks=FAST_HOOKS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def webpush(gw: GatewayServer) -> Iterator[FakeWebPush]:
    fake = gw.run(FakeWebPush().start())
    try:
        yield fake
    finally:
        gw.run(fake.aclose())


@pytest.fixture
def receiver(gw: GatewayServer) -> Iterator[Receiver]:
    r = _serve(gw)
    try:
        yield r
    finally:
        assert r.server is not None
        gw.run(r.server.aclose())


_names = iter(range(1, 10_000))


@pytest.fixture
def tenant(gw: GatewayServer) -> Iterator[Tenant]:
    t = create_tenant(gw, f"hooks-{next(_names)}")
    try:
        yield t
    finally:
        t.close()


def _verify(secret: str, req: Request) -> dict[str, Any]:
    """Check the signature twice: with svix, and by hand from the Standard Webhooks definition."""
    headers = {k: req.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    SvixWebhook(secret).verify(req.body, headers)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + req.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert expected in headers["webhook-signature"].split(" ")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert req.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(req.body)
    return body


def _put(tenant: Tenant, url: str, events: list[str] = ALL, **extra: Any) -> dict[str, Any]:
    r = tenant.admin.put("/v1/namespace/webhook", json={"url": url, "events": events, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _webpush_device(tenant: Tenant, webpush: FakeWebPush, sub: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    r = tenant.admin.put("/v1/namespace/push-credentials/webpush",
                         json={"vapid_private_key": key, "vapid_subject": "mailto:ops@example.com"})
    assert r.status_code == 200, r.text
    token = webpush.browser(sub).token(webpush.url)
    with tenant.user("alice") as c:
        r = c.post("/v1/push/devices", json={"device_id": "phone", "provider": "webpush", "token": token})
        assert r.status_code == 200, r.text
    return token


def _send(tenant: Tenant) -> dict[str, Any]:
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "hi"})
    assert r.status_code in (200, 207), r.text
    body: dict[str, Any] = r.json()
    return body


def test_set_show_delete_and_the_secret_is_shown_once(gw: GatewayServer, tenant: Tenant, receiver: Receiver) -> None:
    assert tenant.admin.get("/v1/namespace/webhook").status_code == 404
    created = _put(tenant, receiver.url, ["send.completed", "delivery.failed"])
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert created["events"] == ["delivery.failed", "send.completed"] and created["state"] == "enabled"
    r = tenant.admin.get("/v1/namespace/webhook")
    assert r.status_code == 200 and secret not in r.text and "secret" not in r.json()
    view = r.json()
    assert view["url"] == receiver.url and view["failures"] == 0 and view["last_success_at"] is None
    # Changing url or events keeps the secret (and does not show it); rotate_secret makes a new one.
    changed = _put(tenant, receiver.url, ALL)
    assert changed["secret"] is None and changed["events"] == ALL
    rotated = _put(tenant, receiver.url, ALL, rotate_secret=True)
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    # Another namespace sees nothing of it, and cannot delete it.
    other = create_tenant(gw, f"hooks-other-{next(_names)}")
    assert other.admin.get("/v1/namespace/webhook").status_code == 404
    assert other.admin.delete("/v1/namespace/webhook").status_code == 404
    other.close()
    assert tenant.admin.get("/v1/namespace/webhook").status_code == 200
    r = tenant.admin.delete("/v1/namespace/webhook")
    assert r.status_code == 200 and r.json() == {"status": "deleted"}
    assert tenant.admin.get("/v1/namespace/webhook").status_code == 404
    assert tenant.admin.delete("/v1/namespace/webhook").status_code == 404


def test_bad_settings_are_refused_with_the_reason(tenant: Tenant, receiver: Receiver) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"url": receiver.url, "events": []}, "events"),
        ({"url": receiver.url, "events": ["delivery.failed", "device.exploded"]}, "unknown event"),
        ({"url": receiver.url, "events": "send.completed"}, "events"),
        ({"url": "ftp://example.com/hook", "events": ALL}, "scheme"),
        ({"url": "http://example.com/hook", "events": ALL}, "https"),
        ({"url": "https://example.com/" + "a" * 3000, "events": ALL}, "url"),
        ({"url": "https://user:pw@example.com/hook", "events": ALL}, "user name"),
        ({"url": receiver.url + "#frag", "events": ALL}, "fragment"),
        ({"events": ALL}, "url"),
        ({"url": receiver.url, "events": ALL, "secret": "whsec_mine"}, "secret"),
        ({"url": receiver.url, "events": ALL, "rotate_secret": "yes"}, "rotate_secret"),
    ]
    for body, word in cases:
        r = tenant.admin.put("/v1/namespace/webhook", json=body)
        assert r.status_code == 400, (body, r.text)
        assert word in r.json()["error"], (body, r.text)
        assert "Traceback" not in r.text
    assert tenant.admin.get("/v1/namespace/webhook").status_code == 404
    r = tenant.admin.put("/v1/namespace/webhook", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_private_addresses_are_refused_unless_the_operator_allows_them(tmp_path: Path) -> None:
    server = GatewayServer(tmp_path).start()  # private endpoints not allowed (the default)
    try:
        tenant = create_tenant(server, "guarded")
        for url in ("https://127.0.0.1:9/hook-secret-path", "https://10.0.0.1/hook", "https://169.254.169.254/x",
                    "https://[::1]/hook", "https://2130706433/hook", "https://localhost/hook",
                    "http://127.0.0.1:9/hook"):
            r = tenant.admin.put("/v1/namespace/webhook", json={"url": url, "events": ALL})
            assert r.status_code == 400 and r.json()["error"].startswith("url"), (url, r.text)
            assert "hook-secret-path" not in r.text
        assert tenant.admin.get("/v1/namespace/webhook").status_code == 404
        tenant.close()
    finally:
        server.stop()


def test_a_dead_subscription_is_reported_signed_without_its_token(
    gw: GatewayServer, tenant: Tenant, receiver: Receiver, webpush: FakeWebPush
) -> None:
    token = _webpush_device(tenant, webpush, "deadSub")
    secret = _put(tenant, receiver.url)["secret"]
    _put(tenant, receiver.url, ALL)  # a PUT without rotate_secret keeps signing with the same secret
    webpush.script["deadSub"] = ["410"]
    report = _send(tenant)
    assert report["results"][0]["state"] == "dead"
    wait_for(lambda: len(receiver.requests) >= 2)
    by_type = {}
    for req in receiver.requests:
        body = _verify(secret, req)
        by_type[body["type"]] = (req, body)
    assert set(by_type) == {"delivery.dead_token", "send.completed"}
    req, dead = by_type["delivery.dead_token"]
    assert req.path == "/hooks/wasmhost" and req.method == "POST"
    assert dead["namespace"] == tenant.name and dead["timestamp"].endswith("Z")
    data = dead["data"]
    assert data["user_id"] == "alice" and data["device_id"] == "phone" and data["provider"] == "webpush"
    assert data["send_id"] == report["send_id"] and data["state"] == "dead" and data["status"] == 410
    assert data["reason"] == "SubscriptionGone"
    for req in receiver.requests:  # never the token, nor any part of it
        assert b"deadSub" not in req.body and json.loads(token)["keys"]["auth"].encode() not in req.body
    assert req.headers["webhook-id"].startswith("msg_")
    _, completed = by_type["send.completed"]
    assert completed["data"]["counts"] == {"delivered": 0, "failed": 0, "dead": 1, "expired": 0}
    assert completed["data"]["send_id"] == report["send_id"]
    time.sleep(0.3)
    assert len(receiver.requests) == 2  # each event once
    wait_for(lambda: tenant.admin.get("/v1/namespace/webhook").json()["last_success_at"] is not None)
    assert metric(gw, "wasmhost_webhook_attempts_total", outcome="success") >= 2


def test_a_permanent_failure_is_reported_with_its_reason(
    tenant: Tenant, receiver: Receiver, webpush: FakeWebPush
) -> None:
    _webpush_device(tenant, webpush, "badSub")
    secret = _put(tenant, receiver.url, ["delivery.failed"])["secret"]
    webpush.script["badSub"] = ["400"]
    report = _send(tenant)
    assert report["results"][0]["state"] == "failed"
    wait_for(lambda: len(receiver.requests) >= 1)
    time.sleep(0.2)
    [req] = receiver.requests  # only the subscribed event
    body = _verify(secret, req)
    assert body["type"] == "delivery.failed"
    assert body["data"]["state"] == "failed" and body["data"]["status"] == 400 and body["data"]["reason"] == "HTTP 400"


def test_failed_attempts_are_retried_with_the_same_id_and_delivered_once(
    gw: GatewayServer, tenant: Tenant, receiver: Receiver
) -> None:
    with tenant.user("alice") as c:
        assert c.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox",
                                                "token": "tok-p"}).status_code == 200
    secret = _put(tenant, receiver.url, ["send.completed"])["secret"]
    failures_before = metric(gw, "wasmhost_webhook_attempts_total", outcome="http_error")
    receiver.script = [500, 503, 500]
    report = _send(tenant)
    assert report["ok"]
    wait_for(lambda: len(receiver.requests) >= 4)
    time.sleep(0.5)
    assert len(receiver.requests) == 4  # three failures, then delivered once
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1
    for req in receiver.requests:
        body = _verify(secret, req)
        assert body["type"] == "send.completed" and body["data"]["counts"]["delivered"] == 1
    view = tenant.admin.get("/v1/namespace/webhook").json()
    assert view["state"] == "enabled" and view["failures"] == 0 and view["failing_since"] is None
    assert view["last_success_at"] and view["last_failure_at"] and view["last_success_at"] >= view["last_failure_at"]
    assert metric(gw, "wasmhost_webhook_attempts_total", outcome="http_error") >= failures_before + 3


def test_an_endpoint_that_keeps_failing_is_disabled_until_a_put(tmp_path: Path) -> None:
    server = GatewayServer(tmp_path, allow_private_endpoints=True, queue=FAST_QUEUE,
                           webhooks=WebhookSettings(retry_base=0.05, retry_max=0.1, poll_interval=0.05,
                                                    disable_after=0.3)).start()
    receiver = _serve(server)
    try:
        tenant = create_tenant(server, "failing")
        with tenant.user("alice") as c:
            assert c.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox",
                                                    "token": "tok-p"}).status_code == 200
        _put(tenant, receiver.url, ["send.completed"])
        receiver.always = 500
        _send(tenant)

        def disabled() -> bool:
            return bool(tenant.admin.get("/v1/namespace/webhook").json()["state"] == "disabled")

        wait_for(disabled)
        view = tenant.admin.get("/v1/namespace/webhook").json()
        assert view["disabled_at"] and "HTTP 500" in view["disabled_reason"] and view["failures"] >= 2
        attempts = len(receiver.requests)
        _send(tenant)  # no event is written or attempted while disabled
        time.sleep(0.4)
        assert len(receiver.requests) == attempts
        assert metric(server, "wasmhost_webhook_endpoints_disabled_total") == 1
        # A PUT enables it again; the next event is delivered.
        receiver.always = 0
        assert _put(tenant, receiver.url, ["send.completed"])["state"] == "enabled"
        _send(tenant)
        wait_for(lambda: len(receiver.requests) > attempts)
        wait_for(lambda: tenant.admin.get("/v1/namespace/webhook").json()["last_success_at"] is not None)
        tenant.close()
    finally:
        assert receiver.server is not None
        server.run(receiver.server.aclose())
        server.stop()
