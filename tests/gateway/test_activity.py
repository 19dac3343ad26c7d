"""What a tenant can read about its own recent activity: each function's last invocations (bounded,
private to the namespace), per-minute usage counters, and its users' devices looked up with the API key."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from wasmhost.gateway import activity

from .guests import LOGGER, TRAP, WELCOME_WASM
from .harness import Tenant


def _deploy(tenant: Tenant, name: str, source: bytes | str) -> None:
    r = tenant.admin.put(f"/v1/functions/{name}", content=source)
    assert r.status_code == 200, r.text


def test_recent_invocations_are_kept_bounded_and_private(
    make_tenant: Callable[..., Tenant], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity, "KEEP_PER_FUNCTION", 3)
    tenant, other = make_tenant(), make_tenant()
    _deploy(tenant, "logger", LOGGER)
    _deploy(tenant, "trap", TRAP)
    assert tenant.admin.get("/v1/functions/logger/invocations").json() == {"function": "logger", "invocations": []}

    for n in range(5):
        r = tenant.admin.post("/v1/functions/logger/invoke", content=f"call {n}")
        assert r.status_code == 200 and r.json()["ok"], r.text
    tenant.admin.post("/v1/functions/trap/invoke")

    got = tenant.admin.get("/v1/functions/logger/invocations").json()["invocations"]
    assert [i["logs"][0]["message"] for i in got] == ["call 4", "call 3", "call 2"]  # newest first, 3 kept
    first = got[0]
    assert first["outcome"] == "ok" and first["output"] == "logged" and first["logs_dropped"] == 0
    assert len(first["logs"]) == 5 and first["fuel_used"] > 0 and first["duration_ms"] > 0
    trapped = tenant.admin.get("/v1/functions/trap/invocations").json()["invocations"]
    assert [(i["outcome"], i["ok"], i["error"]["kind"]) for i in trapped] == [("trap", False, "trap")]

    # Each record is bounded: five 8 KiB log lines do not all fit in 16 KiB.
    tenant.admin.put("/v1/functions/logger?max_log_line_bytes=16384", content=LOGGER)
    r = tenant.admin.post("/v1/functions/logger/invoke", content="x" * 8192)
    assert len(r.json()["logs"]) == 5
    newest = tenant.admin.get("/v1/functions/logger/invocations?limit=1").json()["invocations"]
    kept = len(newest[0]["logs"])
    assert len(newest) == 1 and 0 < kept < 5 and newest[0]["logs_dropped"] == 5 - kept
    assert len(json.dumps(newest[0])) <= activity.MAX_RECORD_BYTES + 200

    # Another namespace's function does not exist for this caller.
    r = other.admin.get("/v1/functions/logger/invocations")
    assert r.status_code == 404 and "call" not in r.text
    assert other.admin.get("/v1/functions/logger/invocations?limit=0").status_code == 400


def _add_device(tenant: Tenant, user: str, device_id: str) -> str:
    with tenant.user(user) as c:
        r = c.post("/v1/push/devices", json={"device_id": device_id, "provider": "outbox", "token": f"tok-{device_id}"})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])


def test_usage_counts_this_namespaces_deliveries_and_invocations(make_tenant: Callable[..., Tenant]) -> None:
    tenant, other = make_tenant(), make_tenant()
    _add_device(tenant, "alice", "phone")
    _add_device(tenant, "alice", "tablet")
    _add_device(other, "alice", "phone")
    before = tenant.admin.get("/v1/namespace/usage").json()
    assert before["namespace"] == tenant.name and before["deliveries"] == [] and before["invocations"] == []

    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "hi"})
    assert r.status_code == 200, r.text
    _deploy(tenant, "welcome", WELCOME_WASM.read_bytes())
    _deploy(tenant, "trap", TRAP)
    r = tenant.admin.post("/v1/functions/welcome/invoke", json={"user": "alice"})
    assert r.json()["ok"], r.text
    tenant.admin.post("/v1/functions/trap/invoke")
    tenant.admin.post("/v1/functions/trap/invoke")

    usage = tenant.admin.get("/v1/namespace/usage?minutes=5").json()
    deliveries = {(d["provider"], d["outcome"]): 0 for d in usage["deliveries"]}
    for d in usage["deliveries"]:
        deliveries[(d["provider"], d["outcome"])] += d["count"]
    assert deliveries == {("outbox", "success"): 4}  # 2 devices, by HTTP and by the guest
    invocations: dict[str, int] = {}
    for i in usage["invocations"]:
        invocations[i["outcome"]] = invocations.get(i["outcome"], 0) + i["count"]
        assert i["mean_ms"] > 0 and i["minute"] % 60 == 0 and i["minute"] >= usage["since"]
    assert invocations == {"ok": 1, "trap": 2}

    theirs = other.admin.get("/v1/namespace/usage").json()
    assert theirs["deliveries"] == [] and theirs["invocations"] == []
    assert tenant.admin.get("/v1/namespace/usage?minutes=0").status_code == 400
    assert tenant.admin.get("/v1/namespace/usage?minutes=100000").status_code == 400


def test_admin_looks_up_a_users_devices_and_deletes_one(make_tenant: Callable[..., Tenant]) -> None:
    tenant, other = make_tenant(), make_tenant()
    phone = _add_device(tenant, "alice", "phone")
    _add_device(tenant, "alice", "tablet")
    theirs = _add_device(other, "alice", "phone")

    r = tenant.admin.get("/v1/namespace/users/alice/devices")
    assert r.status_code == 200
    assert sorted(d["device_id"] for d in r.json()["devices"]) == ["phone", "tablet"]
    assert "tok-" not in r.text and "token" not in r.text
    assert tenant.admin.get("/v1/namespace/users/nobody/devices").json() == {"devices": []}

    assert tenant.admin.delete(f"/v1/namespace/users/alice/devices/{theirs}").status_code == 404
    assert tenant.admin.delete(f"/v1/namespace/users/bob/devices/{phone}").status_code == 404
    assert tenant.admin.delete(f"/v1/namespace/users/alice/devices/{phone}").json() == {"status": "deleted"}
    left = tenant.admin.get("/v1/namespace/users/alice/devices").json()["devices"]
    assert [d["device_id"] for d in left] == ["tablet"]
    assert len(other.admin.get("/v1/namespace/users/alice/devices").json()["devices"]) == 1
    with tenant.user("alice") as c:  # the app user's own view agrees
        assert [d["device_id"] for d in c.get("/v1/push/devices").json()["devices"]] == ["tablet"]
    assert tenant.server.client().get("/v1/namespace/users/alice/devices").status_code == 401


async def test_a_flush_writes_only_what_the_store_keeps_and_the_buffer_is_bounded() -> None:
    from wasmhost.runtime import InvocationResult

    written: list[list[tuple[str, str, int]]] = []

    class Store:
        async def record_activity(self, invocations: list, usage: list, keep: int, max_age: float, now: float) -> None:
            written.append([(r.namespace, r.function, r.record["code"]) for r in invocations])

    clock = iter(range(10**6))
    recorder = activity.Activity(lambda: Store(), clock=lambda: float(next(clock)))  # type: ignore[arg-type, return-value]
    for i in range(1000):  # one busy function: only its newest KEEP_PER_FUNCTION are written
        recorder.invocation("acme", "busy", InvocationResult(code=i))
    recorder.invocation("acme", "quiet", InvocationResult(code=7))
    await recorder.flush()
    keep = activity.KEEP_PER_FUNCTION
    assert written[0] == [("acme", "busy", i) for i in range(1000 - keep, 1000)] + [("acme", "quiet", 7)]
    for f in range(activity.MAX_PENDING):  # many functions: at most MAX_PENDING rows wait for a flush
        recorder.invocation("acme", f"f{f}", InvocationResult(code=0))
    for _ in range(5):  # a function already buffered cannot grow the buffer past MAX_PENDING rows either
        recorder.invocation("acme", "f0", InvocationResult(code=0))
    await recorder.flush()
    assert len(written[1]) == activity.MAX_PENDING
