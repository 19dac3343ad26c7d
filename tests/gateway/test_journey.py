"""The full tenant journey over a real socket: namespace → credentials + auth → devices → deploy →
invoke → the push lands on both devices → the report comes back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.store.pg import drop_schema, run_sync, schema_url

from .guests import WELCOME_WASM
from .harness import GatewayServer, Tenant, create_tenant


def test_full_tenant_journey(make_tenant: Callable[..., Tenant]) -> None:
    _journey(make_tenant("acme"))


def test_full_tenant_journey_on_postgresql(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same journey with the fleet backend: a real PostgreSQL server."""
    monkeypatch.setenv("WASMHOST_STATE_DIR", str(tmp_path / "state"))  # master key and module cache
    url, schema = run_sync(schema_url(pg_database))
    gw = GatewayServer(tmp_path, db_url=url).start()
    try:
        tenant = create_tenant(gw, "acme-pg")
        _journey(tenant)
        tenant.close()
    finally:
        gw.stop()
        run_sync(drop_schema(pg_database, schema))


def _journey(tenant: Tenant) -> None:
    with tenant.user("alice") as alice:
        for device_id in ("phone", "tablet"):
            r = alice.post("/v1/push/devices", json={"device_id": device_id, "provider": "outbox",
                                                    "token": f"tok-{device_id}-secret"})
            assert r.status_code == 200, r.text
            assert "token" not in r.json()
        listed = alice.get("/v1/push/devices").json()["devices"]
    assert sorted(d["device_id"] for d in listed) == ["phone", "tablet"]
    assert all("token" not in d for d in listed)

    r = tenant.admin.put("/v1/functions/welcome", content=WELCOME_WASM.read_bytes(),
                         params={"timeout_ms": 5000}, headers={"content-type": "application/wasm"})
    assert r.status_code == 200, r.text
    assert r.json()["limits"]["timeout_ms"] == 5000

    r = tenant.admin.post("/v1/functions/welcome/invoke", content=json.dumps({"user": "alice", "name": "Alice"}))
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] is True, result
    assert result["output"] == "welcomed alice: 2/2 devices"
    [send] = result["sends"]
    assert send["ok"] is True and send["devices_attempted"] == 2 and send["devices_succeeded"] == 2
    assert {x["device_id"] for x in send["results"]} == {"phone", "tablet"}
    assert "tok-" not in r.text

    deliveries = tenant.admin.get("/v1/push/outbox").json()["deliveries"]
    assert sorted(d["device_id"] for d in deliveries) == ["phone", "tablet"]
    assert all(d["user"] == "alice" and d["message"]["title"] == "Welcome, Alice!" for d in deliveries)
