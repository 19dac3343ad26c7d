"""Push over HTTP: credentials and flat config (validated, redacted, invalidating), send statuses, and a
network provider (the loopback ntfy fake) next to the outbox."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wasmhost.testing.ntfy import FakeNtfy

from .guests import WELCOME_WASM
from .harness import GatewayServer, Tenant, create_tenant


@pytest.fixture
def ntfy(server: GatewayServer) -> Iterator[FakeNtfy]:
    fake = server.run(FakeNtfy(token="old-ntfy-token").start())
    try:
        yield fake
    finally:
        server.run(fake.aclose())


def _add_device(tenant: Tenant, user: str, device_id: str, provider: str, token: str) -> None:
    with tenant.user(user) as c:
        r = c.post("/v1/push/devices", json={"device_id": device_id, "provider": provider, "token": token})
        assert r.status_code == 200, r.text


def test_credentials_are_validated_redacted_and_listed(make_tenant: Callable[..., Tenant], ntfy: FakeNtfy) -> None:
    tenant = make_tenant(outbox=False)
    info = tenant.admin.get("/v1/namespace/push-credentials").json()
    assert info == {"namespace": tenant.name, "configured": [], "supported": sorted(info["supported"]),
                    "push_configured": False}
    assert {"outbox", "ntfy"} <= set(info["supported"])

    r = tenant.admin.put("/v1/namespace/push-credentials/carrier-pigeon", json={})
    assert r.status_code == 400
    assert "unsupported provider 'carrier-pigeon'" in r.json()["error"] and "outbox" in r.json()["error"]
    r = tenant.admin.put("/v1/namespace/push-credentials/outbox", json={"unexpected": 1})
    assert r.status_code == 400 and r.json()["error"].startswith("credential validation failed")
    r = tenant.admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": "ftp://x", "auth_token": "s3cret!"})
    assert r.status_code == 400 and "s3cret!" not in r.text
    for bad_body in (b"[]", b'"text"', b"{not json", b""):
        r = tenant.admin.put("/v1/namespace/push-credentials/outbox", content=bad_body,
                             headers={"content-type": "application/json"})
        assert r.status_code == 400, (bad_body, r.text)

    doc = {"base_url": ntfy.url, "auth_token": "old-ntfy-token"}
    r = tenant.admin.put("/v1/namespace/push-credentials/ntfy", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["redacted"] == {"base_url": ntfy.url, "has_auth_token": True, "has_password": False,
                                    "has_ca_bundle": False}
    got = tenant.admin.get("/v1/namespace/push-credentials/ntfy")
    assert got.json()["configured"] is True and "old-ntfy-token" not in got.text
    assert tenant.admin.get("/v1/namespace/push-credentials/outbox").json()["configured"] is False
    info = tenant.admin.get("/v1/namespace/push-credentials").json()
    assert info["configured"] == ["ntfy"] and info["push_configured"] is True

    r = tenant.admin.delete("/v1/namespace/push-credentials/ntfy")
    assert r.json() == {"namespace": tenant.name, "provider": "ntfy", "configured": False, "redacted": None}
    assert tenant.admin.delete("/v1/namespace/push-credentials/ntfy").status_code == 200  # idempotent
    assert tenant.admin.get("/v1/namespace").json()["push_configured"] is False


def test_send_statuses_not_configured_ok_and_partial(make_tenant: Callable[..., Tenant], ntfy: FakeNtfy) -> None:
    tenant = make_tenant(outbox=False)
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "hi"})
    assert r.status_code == 503 and "not configured" in r.json()["error"]

    tenant.admin.put("/v1/namespace/push-credentials/outbox", json={})
    tenant.admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": ntfy.url, "auth_token": "old-ntfy-token"})
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "nobody home"})
    body = r.json()
    assert r.status_code == 200 and body.pop("send_id") and body == {
        "ok": True, "devices_attempted": 0, "devices_succeeded": 0, "results": []}
    _add_device(tenant, "alice", "phone", "outbox", "outbox-token-1")
    _add_device(tenant, "alice", "laptop", "ntfy", "alice-laptop-topic")
    ntfy.script["alice-laptop-topic"] = ["400"]
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "half", "data": {"k": "v"}})
    assert r.status_code == 207, r.text
    report = r.json()
    assert report["ok"] is False and report["devices_attempted"] == 2 and report["devices_succeeded"] == 1
    failed = next(x for x in report["results"] if not x["success"])
    assert failed["device_id"] == "laptop" and failed["provider"] == "ntfy" and failed["status"] == 400
    assert failed["reason"]  # the per-device reason, not a bare "one or more devices failed"
    assert "alice-laptop-topic" not in r.text and ntfy.url not in r.text

    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "both"})
    assert r.status_code == 200 and r.json()["devices_succeeded"] == 2
    assert ntfy.published[-1]["title"] == "both"


def test_send_refuses_bad_messages(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    cases = [
        ({"title": "no user"}, "user_id"),
        ({"user_id": "alice", "priority": "urgent"}, "priority"),
        ({"user_id": "alice", "badge": "3"}, "badge"),
        ({"user_id": "alice", "title": "x", "colour": "red"}, "colour"),
        ({"user_id": "alice", "message_id": "m" * 65}, "message_id"),
        ({"user_id": "alice", "data": [1, 2]}, "data"),
    ]
    for body, field in cases:
        r = tenant.admin.post("/v1/push/send", json=body)
        assert r.status_code == 400, (body, r.text)
        assert field in r.json()["error"], r.text
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "body": "x" * 20_000})
    assert r.status_code == 413 and "16384" in r.json()["error"]


def test_rotated_credentials_are_used_by_the_very_next_send(
    make_tenant: Callable[..., Tenant], ntfy: FakeNtfy
) -> None:
    tenant = make_tenant(outbox=False)
    tenant.admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": ntfy.url, "auth_token": "old-ntfy-token"})
    _add_device(tenant, "alice", "phone", "ntfy", "alice-phone")
    assert tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "1"}).status_code == 200
    assert ntfy.auth_seen[-1] == "Bearer old-ntfy-token"

    # The server rotates its token; the namespace's dispatcher (cached, TTL 30 s) still holds the old one
    # until the tenant saves the new credentials, which must take effect on the very next send.
    ntfy.token = "new-ntfy-token"
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "2"})
    assert r.status_code == 207 and r.json()["results"][0]["status"] == 401
    assert tenant.admin.put("/v1/namespace/push-credentials/ntfy",
                            json={"base_url": ntfy.url, "auth_token": "new-ntfy-token"}).status_code == 200
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "3"})
    assert r.status_code == 200, r.text
    assert ntfy.auth_seen[-1] == "Bearer new-ntfy-token" and ntfy.published[-1]["title"] == "3"


def test_flat_config_keeps_clears_and_invalidates(make_tenant: Callable[..., Tenant], ntfy: FakeNtfy) -> None:
    tenant = make_tenant(outbox=False)
    empty = tenant.admin.get("/v1/push/config").json()
    assert empty == {"namespace": tenant.name, "ntfy_base_url": "", "has_ntfy_auth_token": False,
                     "has_expo_access_token": False, "updated_at": 0.0}
    r = tenant.admin.put("/v1/push/config", json={"ntfy_base_url": ntfy.url, "ntfy_auth_token": "old-ntfy-token"})
    assert r.status_code == 200 and "old-ntfy-token" not in r.text
    assert r.json()["has_ntfy_auth_token"] is True
    _add_device(tenant, "alice", "phone", "ntfy", "alice-phone")
    assert tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "1"}).status_code == 200

    # Omitted and null keep; the rotated token is used by the next send.
    ntfy.token = "new-ntfy-token"
    r = tenant.admin.put("/v1/push/config", json={"ntfy_auth_token": "new-ntfy-token", "expo_access_token": None})
    assert r.json()["ntfy_base_url"] == ntfy.url and r.json()["has_ntfy_auth_token"] is True
    assert tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "2"}).status_code == 200
    assert ntfy.auth_seen[-1] == "Bearer new-ntfy-token"

    # "" clears; with no base URL left, ntfy is off and the namespace is not configured.
    r = tenant.admin.put("/v1/push/config", json={"ntfy_base_url": ""})
    assert r.json()["ntfy_base_url"] == "" and r.json()["has_ntfy_auth_token"] is True
    assert tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "3"}).status_code == 503
    assert tenant.admin.delete("/v1/push/config").json() == {"status": "cleared"}
    assert tenant.admin.get("/v1/push/config").json()["has_ntfy_auth_token"] is False
    for bad in ({"ntfy_base_url": 5}, {"unknown": "x"}, {"ntfy_base_url": "u" * 3000}):
        assert tenant.admin.put("/v1/push/config", json=bad).status_code == 400


def test_tenant_urls_pass_the_ssrf_guard(tmp_path: Path) -> None:
    gw = GatewayServer(tmp_path).start()  # private endpoints not allowed (the default)
    try:
        tenant = create_tenant(gw, "guarded")
        for url in ("http://127.0.0.1:9/", "http://169.254.169.254/latest", "http://10.0.0.1/", "http://[::1]/",
                    "http://2130706433/", "file:///etc/passwd"):
            r = tenant.admin.put("/v1/push/config", json={"ntfy_base_url": url})
            assert r.status_code == 400 and r.json()["error"].startswith("ntfy_base_url rejected"), (url, r.text)
            r = tenant.admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": url})
            assert r.status_code == 400, (url, r.text)
        assert tenant.admin.get("/v1/push/config").json()["ntfy_base_url"] == ""
        tenant.close()
    finally:
        gw.stop()


def test_journey_with_ntfy_and_outbox(make_tenant: Callable[..., Tenant], ntfy: FakeNtfy) -> None:
    """The journey's push lands on an outbox device and on a network provider over a real socket."""
    tenant = make_tenant()
    tenant.admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": ntfy.url, "auth_token": "old-ntfy-token"})
    _add_device(tenant, "carol", "phone", "outbox", "carol-outbox-token")
    _add_device(tenant, "carol", "desktop", "ntfy", "carol-desktop")
    assert tenant.admin.put("/v1/functions/welcome", content=WELCOME_WASM.read_bytes()).status_code == 200
    r = tenant.admin.post("/v1/functions/welcome/invoke", content=json.dumps({"user": "carol", "name": "Carol"}))
    assert r.status_code == 200 and r.json()["output"] == "welcomed carol: 2/2 devices", r.text
    [published] = [p for p in ntfy.published if p["topic"] == "carol-desktop"]
    assert published["title"] == "Welcome, Carol!"
    [delivered] = tenant.admin.get("/v1/push/outbox").json()["deliveries"]
    assert delivered["device_id"] == "phone" and delivered["message"]["title"] == "Welcome, Carol!"


def test_a_device_for_an_unconfigured_provider_is_refused_naming_the_configured_ones(
    make_tenant: Callable[..., Tenant],
) -> None:
    tenant = make_tenant()  # outbox only
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/devices", json={"device_id": "phone", "provider": "ntfy", "token": "alerts-alice"})
        assert r.status_code == 400
        error = r.json()["error"]
        assert "'ntfy' is not configured" in error and "configured: outbox" in error
        assert "PUT /v1/namespace/push-credentials/ntfy" in error
        assert alice.get("/v1/push/devices").json()["devices"] == []
        ok = alice.post("/v1/push/devices", json={"device_id": "phone", "provider": "outbox", "token": "tok"})
        assert ok.status_code == 200, ok.text
    bare = make_tenant(outbox=False)
    with bare.user("bob") as bob:
        r = bob.post("/v1/push/devices", json={"device_id": "phone", "provider": "outbox", "token": "tok"})
        assert r.status_code == 400 and "configured: none" in r.json()["error"]
