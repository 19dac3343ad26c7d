"""Two real gateway processes on one PostgreSQL: a change made through A is what B uses next.

B's TTL (dispatchers, API keys, functions, device lists) is 30 s, so B using a change within a second can
only be the LISTEN/NOTIFY path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.fleet.conftest import B_TTL
from tests.fleet.gateways import ADMIN_TOKEN, GatewayProcess, Tenant, create_tenant, metric
from wasmhost.testing.ntfy import FakeNtfy

Fleet = tuple[GatewayProcess, GatewayProcess]

#: A notification normally lands in a few milliseconds; this pause keeps the test far from that edge
#: while staying well inside the one second the fleet promises.
SETTLE = 0.1


def _version_module(version: str) -> str:
    """A guest whose output names its version."""
    data = version.encode()
    return f"""(module
  (import "wasmhost" "output_write" (func $write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{version}")
  (func (export "handle") (result i32)
    (drop (call $write (i32.const 16) (i32.const {len(data)})))
    (i32.const 0)))"""


@pytest.fixture
async def ntfy() -> AsyncIterator[FakeNtfy]:
    fake = await FakeNtfy().start()
    try:
        yield fake
    finally:
        await fake.aclose()


async def _ntfy_tenant(a: GatewayProcess, ntfy: FakeNtfy, token: str, topics: list[str]) -> tuple[Tenant, list[str]]:
    tenant = await create_tenant(a)
    async with tenant.admin(a) as admin:
        r = await admin.put("/v1/namespace/push-credentials/ntfy", json={"base_url": ntfy.url, "auth_token": token})
        assert r.status_code == 200, r.text
    ids = []
    async with tenant.user(a, "alice") as alice:
        for i, topic in enumerate(topics):
            r = await alice.post("/v1/push/devices", json={"device_id": f"d{i}", "provider": "ntfy", "token": topic})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
    return tenant, ids


async def _send(gw: GatewayProcess, tenant: Tenant, body: str = "hello") -> dict[str, object]:
    async with tenant.admin(gw) as admin:
        r = await admin.post("/v1/push/send", json={"user_id": "alice", "body": body})
    assert r.status_code in (200, 207), r.text
    report: dict[str, object] = r.json()
    return report


async def test_credentials_changed_on_a_are_used_by_b_within_a_second(fleet: Fleet, ntfy: FakeNtfy) -> None:
    a, b = fleet
    tenant, _ = await _ntfy_tenant(a, ntfy, "tk_old_secret", ["alerts"])
    await _send(b, tenant)  # B builds and caches its dispatcher with the old token
    await _send(b, tenant)
    assert ntfy.auth_seen[-2:] == ["Bearer tk_old_secret"] * 2

    async with tenant.admin(a) as admin:
        started = time.monotonic()
        r = await admin.put("/v1/namespace/push-credentials/ntfy",
                            json={"base_url": ntfy.url, "auth_token": "tk_new_secret"})
        assert r.status_code == 200, r.text
    await asyncio.sleep(SETTLE)
    await _send(b, tenant)
    assert time.monotonic() - started < 1.0
    assert ntfy.auth_seen[-1] == "Bearer tk_new_secret"
    assert "tk_" not in b.log() and "tk_" not in a.log()


async def test_function_redeployed_on_a_runs_the_new_code_on_b(fleet: Fleet) -> None:
    a, b = fleet
    tenant = await create_tenant(a)
    async with tenant.admin(a) as on_a, tenant.admin(b) as on_b:
        for version in ("v1-old", "v2-new"):
            r = await on_a.put("/v1/functions/greet", content=_version_module(version))
            assert r.status_code == 200, r.text
            r = await on_b.post("/v1/functions/greet/invoke", content=b"")
            assert r.status_code == 200, r.text
            assert r.json()["output"] == version


async def test_device_deleted_on_a_is_not_sent_to_by_b(fleet: Fleet, ntfy: FakeNtfy) -> None:
    a, b = fleet
    tenant, ids = await _ntfy_tenant(a, ntfy, "tk_dev", ["phone", "tablet"])
    report = await _send(b, tenant, "first")
    assert report["devices_attempted"] == 2
    async with tenant.user(a, "alice") as alice:
        r = await alice.delete(f"/v1/push/devices/{ids[1]}")
        assert r.status_code == 200, r.text
    report = await _send(b, tenant, "second")
    assert report["devices_attempted"] == 1
    second = [p["topic"] for p in ntfy.published if p.get("message") == "second"]
    assert second == ["phone"]


async def test_api_key_revoked_on_a_is_refused_by_b_within_a_second(fleet: Fleet) -> None:
    a, b = fleet
    tenant = await create_tenant(a)
    async with a.client(ADMIN_TOKEN) as op:
        r = await op.post(f"/v1/namespaces/{tenant.name}/keys")
        assert r.status_code == 201, r.text
        second = r.json()
    async with b.client(second["api_key"]) as on_b:
        for _ in range(2):  # B reads the key and keeps it (its cache's TTL is 30 s)
            assert (await on_b.get("/v1/functions")).status_code == 200
        async with a.client(ADMIN_TOKEN) as op:
            started = time.monotonic()
            r = await op.delete(f"/v1/namespaces/{tenant.name}/keys/{second['key_id']}")
            assert r.status_code == 200, r.text
        await asyncio.sleep(SETTLE)
        r = await on_b.get("/v1/functions")
        assert time.monotonic() - started < 1.0
        assert r.status_code == 401, r.text
    async with tenant.admin(b) as admin:  # the namespace's other key still works
        assert (await admin.get("/v1/functions")).status_code == 200


async def test_two_gateways_racing_for_one_token_leave_one_owner(fleet: Fleet) -> None:
    a, b = fleet
    tenant = await create_tenant(a)
    async with tenant.admin(a) as admin:
        assert (await admin.put("/v1/namespace/push-credentials/outbox", json={})).status_code == 200
    async with tenant.user(a, "alice") as alice, tenant.user(b, "bob") as bob:
        for round_ in range(10):
            token = f"same-physical-token-{round_}"
            body = {"device_id": f"phone{round_}", "provider": "outbox", "token": token}
            ra, rb = await asyncio.gather(alice.post("/v1/push/devices", json=body),
                                          bob.post("/v1/push/devices", json=body))
            assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
            owners = []
            for name, client in (("alice", alice), ("bob", bob)):
                listed = (await client.get("/v1/push/devices")).json()["devices"]
                owners += [name for d in listed if d["device_id"] == f"phone{round_}"]
            assert len(owners) == 1, f"round {round_}: {owners}"


async def test_b_recovers_its_listener_and_never_serves_older_than_the_ttl(
    fleet: Fleet, ntfy: FakeNtfy, fleet_db: str
) -> None:
    a, b = fleet
    tenant, _ = await _ntfy_tenant(a, ntfy, "tk_before_cut", ["alerts"])
    await _send(b, tenant)
    async with b.client() as probe:
        before = (await probe.get("/metrics")).text
    assert metric(before, "wasmhost_change_listener_connected") == 1

    conn = await asyncpg.connect(fleet_db)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE $1",
            f"wasmhost-listener/{b.pid}/%",
        )
    finally:
        await conn.close()
    assert killed == 1
    async with tenant.admin(a) as admin:  # a change made around the time B's listener is down
        changed_at = time.monotonic()
        r = await admin.put("/v1/namespace/push-credentials/ntfy",
                            json={"base_url": ntfy.url, "auth_token": "tk_after_cut"})
        assert r.status_code == 200, r.text

    while True:  # B must use the change, and never later than its TTL after it
        await _send(b, tenant)
        if ntfy.auth_seen[-1] == "Bearer tk_after_cut":
            break
        assert time.monotonic() - changed_at < B_TTL, "B served credentials older than its TTL"
        await asyncio.sleep(0.05)

    deadline = time.monotonic() + 10
    while True:
        async with b.client() as probe:
            text = (await probe.get("/metrics")).text
        if metric(text, "wasmhost_change_listener_reconnects_total") >= 1:
            break
        assert time.monotonic() < deadline, "B did not report its listener reconnect"
        await asyncio.sleep(0.05)
    assert metric(text, "wasmhost_change_listener_connected") == 1
    assert metric(text, "wasmhost_change_listener_disconnects_total") >= 1
    assert "change listener lost its connection" in b.log()
    assert "change listener reconnected" in b.log()

    # and B hears A again
    async with tenant.admin(a) as admin:
        r = await admin.put("/v1/namespace/push-credentials/ntfy",
                            json={"base_url": ntfy.url, "auth_token": "tk_after_recovery"})
        assert r.status_code == 200, r.text
    await asyncio.sleep(SETTLE)
    await _send(b, tenant)
    assert ntfy.auth_seen[-1] == "Bearer tk_after_recovery"
