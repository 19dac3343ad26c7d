"""Function routes: deploy-time validation, metadata, invocation results, and runaway guests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from .guests import BAD_IMPORT, ECHO, LOOP, TRAP
from .harness import GatewayServer, Tenant, metric, wait_for

#: 32 pages (2 MiB) of initial memory.
BIG_MEMORY = """(module (memory (export "memory") 32) (func (export "handle") (result i32) (i32.const 0)))"""


def test_deploy_validates_modules_and_limits(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    cases = [
        (b"\x00asm\x01\x00\x00\x00garbage", {}, "invalid module"),
        (b"\xff\xfe not wasm", {}, "not a WebAssembly module"),
        (b"(module (func", {}, "WAT text does not parse"),
        (BAD_IMPORT.encode(), {}, "env.system"),
        (b'(module (memory (export "memory") 1))', {}, "handle"),
        (b"", {}, "module"),
        (ECHO.encode(), {"timeout_ms": 600_000}, "timeout_ms"),
        (ECHO.encode(), {"fuel": 0}, "fuel"),
        (ECHO.encode(), {"memory_mb": "lots"}, "memory_mb"),
        (ECHO.encode(), {"timeout": 5}, "unknown limit(s): timeout"),
        (BIG_MEMORY.encode(), {"memory_mb": 1}, "memory starts at 2 MiB"),
    ]
    for body, params, reason in cases:
        r = tenant.admin.put("/v1/functions/f", content=body, params=params)
        assert r.status_code == 400, (body[:20], params, r.text)
        assert reason in r.json()["error"], r.text
    assert tenant.admin.put("/v1/functions/bad%20name!", content=ECHO.encode()).status_code == 400
    assert tenant.admin.get("/v1/functions").json() == {"functions": []}
    assert tenant.admin.put("/v1/functions/f", content=BIG_MEMORY.encode(), params={"memory_mb": 2}).status_code == 200


def test_deploy_list_get_delete(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    r = tenant.admin.put("/v1/functions/echo", content=ECHO.encode(), params={"fuel": 5000, "max_sends": 2})
    assert r.status_code == 200, r.text
    meta = r.json()
    assert meta["name"] == "echo" and meta["size"] == len(ECHO.encode()) and len(meta["sha256"]) == 64
    assert meta["limits"]["fuel"] == 5000 and meta["limits"]["max_sends"] == 2
    assert meta["limits"]["timeout_ms"] == 5000  # the platform default
    assert tenant.admin.get("/v1/functions/echo").json() == meta
    assert tenant.admin.get("/v1/functions").json() == {"functions": [meta]}
    # Redeploying replaces module and limits.
    r = tenant.admin.put("/v1/functions/echo", content=ECHO.encode() + b" ")
    assert r.json()["limits"]["fuel"] == 100_000_000 and r.json()["sha256"] != meta["sha256"]
    assert tenant.admin.delete("/v1/functions/echo").json() == {"status": "deleted"}
    assert tenant.admin.get("/v1/functions/echo").status_code == 404
    assert tenant.admin.delete("/v1/functions/echo").status_code == 404
    assert tenant.admin.post("/v1/functions/echo/invoke").status_code == 404


def test_invoke_returns_the_invocation_result(make_tenant: Callable[..., Tenant]) -> None:
    tenant = make_tenant()
    tenant.admin.put("/v1/functions/echo", content=ECHO.encode())
    r = tenant.admin.post("/v1/functions/echo/invoke", content=b'{"hello": "world"}')
    assert r.status_code == 200
    result = r.json()
    assert result["ok"] is True and result["code"] == 0 and result["error"] is None
    assert result["output"] == '{"hello": "world"}'
    assert result["output_base64"] is None
    assert result["fuel_used"] > 0 and result["duration_ms"] >= 0 and result["sends"] == [] and result["logs"] == []

    tenant.admin.put("/v1/functions/trap", content=TRAP.encode())
    r = tenant.admin.post("/v1/functions/trap/invoke")
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["code"] is None and r.json()["error"]["kind"] == "trap"


def test_a_looping_guest_is_stopped_and_the_gateway_keeps_serving(
    server: GatewayServer, make_tenant: Callable[..., Tenant]
) -> None:
    tenant, other = make_tenant("loop"), make_tenant("busy")
    assert tenant.admin.put("/v1/functions/spin", content=LOOP.encode(),
                            params={"fuel": 1_000_000_000, "timeout_ms": 60_000}).status_code == 200
    assert tenant.admin.put("/v1/functions/spin-short", content=LOOP.encode(),
                            params={"fuel": 1_000_000_000, "timeout_ms": 200}).status_code == 200
    other.admin.put("/v1/functions/echo", content=ECHO.encode())
    fuel_traps = metric(server, "wasmhost_traps_total", kind="out_of_fuel")

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(tenant.admin.post, "/v1/functions/spin/invoke")
        # While the guest spins on the wasm thread, the gateway answers other callers.
        wait_for(lambda: metric(server, "wasmhost_invocations_in_flight") == 1 or running.done())
        seen_in_flight = not running.done()
        with server.client() as anon:
            assert anon.get("/healthz").json() == {"status": "ok"}
        assert other.admin.get("/v1/functions").status_code == 200
        with other.user("dave") as dave:
            assert dave.post("/v1/push/devices", json={"device_id": "d", "provider": "outbox",
                                                        "token": "t-1"}).status_code == 200
        still_running = not running.done()
        r: httpx.Response = running.result(timeout=60)
    assert seen_in_flight and still_running, "the guest finished before the other requests were served"
    assert r.status_code == 200
    assert r.json()["ok"] is False and r.json()["error"]["kind"] == "out_of_fuel"
    assert r.json()["fuel_used"] == 1_000_000_000

    r = tenant.admin.post("/v1/functions/spin-short/invoke")
    assert r.status_code == 200 and r.json()["error"]["kind"] == "timeout", r.text
    # Others' functions still run afterwards.
    assert other.admin.post("/v1/functions/echo/invoke", content=b"after").json()["output"] == "after"
    assert metric(server, "wasmhost_traps_total", kind="out_of_fuel") == fuel_traps + 1
    assert metric(server, "wasmhost_invocations_in_flight") == 0
