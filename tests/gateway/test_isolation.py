"""Namespace A's credentials cannot read, change, invoke or send anything in namespace B: every route is
tried with B's names and ids, and B's state is compared before and after."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .guests import ECHO, WELCOME_WASM
from .harness import Tenant, hs256_token

SNAPSHOT_ROUTES = (
    "/v1/namespace", "/v1/namespace/auth", "/v1/namespace/push-credentials",
    "/v1/namespace/push-credentials/outbox", "/v1/push/config", "/v1/functions", "/v1/functions/secretfn",
    "/v1/push/outbox",
)


def _snapshot(tenant: Tenant) -> dict[str, Any]:
    out = {path: tenant.admin.get(path).json() for path in SNAPSHOT_ROUTES}
    with tenant.user("bob") as bob:
        out["devices"] = bob.get("/v1/push/devices").json()
    return out


def test_namespace_a_cannot_touch_namespace_b(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant("a"), make_tenant("b")
    # B: a function, a device for bob, a delivery, a flat config secret.
    assert b.admin.put("/v1/functions/secretfn", content=WELCOME_WASM.read_bytes()).status_code == 200
    with b.user("bob") as bob:
        bob_device = bob.post("/v1/push/devices", json={"device_id": "bphone", "provider": "outbox",
                                                         "token": "b-token-secret"}).json()["id"]
    assert b.admin.post("/v1/push/send", json={"user_id": "bob", "title": "for bob"}).status_code == 200
    assert b.admin.put("/v1/push/config", json={"expo_access_token": "b-expo-secret"}).status_code == 200
    before = _snapshot(b)
    assert before["/v1/push/config"]["has_expo_access_token"] is True

    # A's admin key, aimed at B's objects. Everything resolves to A's own namespace.
    assert a.admin.get("/v1/namespace").json()["namespace"] == a.name
    for method, path in (("GET", "/v1/functions/secretfn"), ("DELETE", "/v1/functions/secretfn"),
                         ("POST", "/v1/functions/secretfn/invoke")):
        r = a.admin.request(method, path, content=b"{}" if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json() == {"error": "function 'secretfn' not found"}
    assert a.admin.get("/v1/functions").json() == {"functions": []}
    assert a.admin.get("/v1/push/outbox").json() == {"deliveries": []}
    assert a.admin.get("/v1/push/config").json()["namespace"] == a.name

    # Sending to B's user from A reaches A's (empty) user, not B's devices.
    r = a.admin.post("/v1/push/send", json={"user_id": "bob", "title": "from A"})
    assert r.status_code == 200 and r.json()["devices_attempted"] == 0

    # Writes with A's key change only A.
    assert a.admin.put("/v1/functions/secretfn", content=ECHO.encode()).status_code == 200
    assert a.admin.put("/v1/push/config", json={"expo_access_token": ""}).status_code == 200
    assert a.admin.delete("/v1/push/config").status_code == 200
    assert a.admin.delete("/v1/namespace/push-credentials/outbox").status_code == 200
    new_auth = {"alg": "HS256", "key": "a-new-secret-" + "z" * 40}
    assert a.admin.put("/v1/namespace/auth", json=new_auth).status_code == 200
    assert a.admin.delete("/v1/namespace/auth").status_code == 200
    assert a.admin.delete("/v1/functions/secretfn").status_code == 200

    # A's users (and a user of B without the device) cannot see or delete bob's device.
    with a.user("bob", hs256_token(a.jwt_secret, "bob")) as a_bob:
        # (A's auth settings were deleted above: A's users are refused outright.)
        assert a_bob.delete(f"/v1/push/devices/{bob_device}").status_code == 401
    with b.user("mallory") as mallory:
        r = mallory.delete(f"/v1/push/devices/{bob_device}")
        assert r.status_code == 404 and r.json() == {"error": "device not found"}
        assert mallory.get("/v1/push/devices").json() == {"devices": []}
    # A token signed with A's secret, presented for B, is refused.
    with b.server.client(hs256_token(a.jwt_secret, "bob"), **{"X-Wasmhost-Namespace": b.name}) as forged:
        assert forged.get("/v1/push/devices").status_code == 401
        assert forged.delete(f"/v1/push/devices/{bob_device}").status_code == 401

    # A's key on the operator routes for B.
    for method, path in (("POST", f"/v1/namespaces/{b.name}/keys"), ("GET", f"/v1/namespaces/{b.name}/keys"),
                         ("DELETE", f"/v1/namespaces/{b.name}/keys/{b.key_id}")):
        assert a.admin.request(method, path).status_code == 401

    after = _snapshot(b)
    assert after == before
    r = b.admin.post("/v1/functions/secretfn/invoke", content=json.dumps({"user": "bob"}))
    assert r.status_code == 200 and r.json()["output"] == "welcomed bob: 1/1 devices"
    # Nothing B holds ever appeared in A's answers.
    assert "b-token-secret" not in json.dumps(after) and "b-expo-secret" not in json.dumps(after)
