"""Caps and bad input: body caps per route (413, also for chunked bodies), malformed bodies (400),
per-namespace sends per minute (HTTP 429 + Retry-After; guests get RATE_LIMITED) and concurrent
invocations (429), and the `{"error"}` shape for Starlette's own 404/405."""

from __future__ import annotations

import base64
import itertools
import json
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wasmhost.gateway import GatewayConfig
from wasmhost.runtime import RATE_LIMITED

from .guests import ECHO, LOOP
from .harness import ADMIN_TOKEN, GatewayServer, Tenant, create_tenant, metric, wait_for

KIB = 1024
SPAM_SENDS = (Path(__file__).resolve().parents[2] / "guest_examples" / "sandbox" / "spam_sends.wat").read_text()
_names = itertools.count(1)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    config = GatewayConfig(admin_token=ADMIN_TOKEN, max_module_bytes=64 * KIB, max_input_bytes=1 * KIB,
                           sends_per_minute=3, max_concurrent_invocations=1, max_total_invocations=2)
    gw = GatewayServer(tmp_path_factory.mktemp("small"), config).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def tenant(small: GatewayServer) -> Iterator[Tenant]:
    t = create_tenant(small, f"lim-{next(_names)}")
    yield t
    t.close()


def test_body_caps_per_route(tenant: Tenant) -> None:
    pad = "p" * (70 * KIB)
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/devices", json={"device_id": "d", "provider": "outbox", "token": "t" * (4 * KIB)})
        assert r.status_code == 413 and r.json() == {"error": "request body is over this route's limit of 4096 bytes"}
    cases = [
        ("POST", "/v1/push/send", {"user_id": "alice", "title": pad}, 64 * KIB),
        ("PUT", "/v1/push/config", {"ntfy_auth_token": pad[: 17 * KIB]}, 16 * KIB),
        ("PUT", "/v1/namespace/push-credentials/outbox", {"x": pad[: 33 * KIB]}, 32 * KIB),
        ("PUT", "/v1/namespace/auth", {"alg": "HS256", "key": pad[: 33 * KIB]}, 32 * KIB),
    ]
    for method, path, body, limit in cases:
        r = tenant.admin.request(method, path, json=body)
        assert r.status_code == 413, (path, r.text)
        assert r.json()["error"] == f"request body is over this route's limit of {limit} bytes"
    r = tenant.admin.put("/v1/functions/big", content=b"(module)" + b" " * (64 * KIB))
    assert r.status_code == 413 and r.json()["error"] == (
        f"request body is over this route's limit of {64 * KIB} bytes (the module limit, WASMHOST_MAX_MODULE_BYTES)")
    tenant.admin.put("/v1/functions/echo", content=ECHO.encode())
    r = tenant.admin.post("/v1/functions/echo/invoke", content=b"x" * (KIB + 1))
    assert r.status_code == 413 and "WASMHOST_MAX_INPUT_BYTES" in r.json()["error"]
    assert tenant.admin.post("/v1/functions/echo/invoke", content=b"x" * KIB).json()["output"] == "x" * KIB


def test_chunked_bodies_are_capped_while_streaming(tenant: Tenant) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        yield b'{"user_id": "alice", "title": "'
        for _ in range(total // KIB):
            yield b"a" * KIB
        yield b'"}'

    r = tenant.admin.post("/v1/push/send", content=chunks(100 * KIB), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    r = tenant.admin.put("/v1/functions/big", content=(b" " * KIB for _ in range(100)))
    assert r.status_code == 413 and "WASMHOST_MAX_MODULE_BYTES" in r.json()["error"]
    r = tenant.admin.post("/v1/push/send", content=chunks(2 * KIB), headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_malformed_bodies_are_400_with_a_reason(tenant: Tenant) -> None:
    cases = [
        ("POST", "/v1/push/send", b'{"user_id": "alice", ', "JSON"),
        ("POST", "/v1/push/send", b"[1, 2]", "dictionary"),
        ("POST", "/v1/push/send", b'"alice"', "dictionary"),
        ("POST", "/v1/push/send", b"", "required"),
        ("PUT", "/v1/push/config", b'{"ntfy_base_url": ["x"]}', "ntfy_base_url"),
        ("PUT", "/v1/namespace/auth", b'{"alg": "HS256", "key": 42}', "key"),
        ("PUT", "/v1/namespace/push-credentials/outbox", b"\xff\xfe", "JSON"),
    ]
    for method, path, body, reason in cases:
        r = tenant.admin.request(method, path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (path, body, r.text)
        assert set(r.json()) == {"error"} and reason in r.json()["error"], r.text
    r = tenant.admin.post("/v1/push/send", content=b"user_id=alice", headers={"content-type": "text/plain"})
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["error"]
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/devices", json={"device_id": "d", "provider": "outbox"})
        assert r.status_code == 400 and r.json() == {"error": "token: Field required"}
        r = alice.post("/v1/push/devices", json={"device_id": "d", "provider": "apns-x", "token": "t"})
        assert r.status_code == 400 and "unsupported provider" in r.json()["error"]
        r = alice.post("/v1/push/devices", json={"device_id": "d", "provider": "outbox", "token": "   "})
        assert r.status_code == 400 and "token" in r.json()["error"]


def test_unknown_routes_and_methods_answer_json(small: GatewayServer) -> None:
    with small.client() as c:
        r = c.get("/v1/nope")
        assert r.status_code == 404 and r.json() == {"error": "Not Found"}
        r = c.patch("/v1/push/send")
        assert r.status_code == 405 and r.json() == {"error": "Method Not Allowed"} and r.headers["allow"] == "POST"
        # Every method served at the path, not only the first route's (Starlette's default).
        assert c.patch("/v1/push/config").headers["allow"] == "DELETE, GET, PUT"
        r = c.get("/v1/push/outbox", params={"limit": "many"})
        assert r.status_code == 401  # identity is checked before parameters


def test_sends_per_minute_apply_to_http_and_guest_sends(small: GatewayServer, tenant: Tenant) -> None:
    limited_before = metric(small, "wasmhost_rate_limited_total", cap="sends_per_minute")
    for i in range(3):
        assert tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": str(i)}).status_code == 200
    r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "one too many"})
    assert r.status_code == 429 and "3 sends per minute" in r.json()["error"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert metric(small, "wasmhost_rate_limited_total", cap="sends_per_minute") == limited_before + 1

    # A guest in a fresh namespace gets its 3 sends, then RATE_LIMITED (-5).
    fresh = create_tenant(small, f"lim-{next(_names)}")
    assert fresh.admin.put("/v1/functions/spam", content=SPAM_SENDS.encode()).status_code == 200
    r = fresh.admin.post("/v1/functions/spam/invoke")
    assert r.status_code == 200, r.text
    accepted, code = struct.unpack("<ii", base64.b64decode(r.json()["output_base64"]))
    assert (accepted, code) == (3, RATE_LIMITED)
    # And the namespace's HTTP sends share that budget.
    assert fresh.admin.post("/v1/push/send", json={"user_id": "alice", "title": "x"}).status_code == 429
    # Other namespaces are unaffected.
    other = create_tenant(small, f"lim-{next(_names)}")
    assert other.admin.post("/v1/push/send", json={"user_id": "alice", "title": "x"}).status_code == 200
    fresh.close()
    other.close()


def test_concurrent_invocations_per_namespace(small: GatewayServer, tenant: Tenant) -> None:
    tenant.admin.put("/v1/functions/spin", content=LOOP.encode(), params={"fuel": 1_000_000_000})
    tenant.admin.put("/v1/functions/echo", content=ECHO.encode())
    other = create_tenant(small, f"lim-{next(_names)}")
    other.admin.put("/v1/functions/echo", content=ECHO.encode())
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(tenant.admin.post, "/v1/functions/spin/invoke")
        wait_for(lambda: metric(small, "wasmhost_invocations_in_flight") == 1 or running.done())
        r = tenant.admin.post("/v1/functions/echo/invoke", content=b"second")
        busy = not running.done()
        # Another namespace is not held back by this one's cap (it queues for the wasm thread).
        queued = pool.submit(other.admin.post, "/v1/functions/echo/invoke", content=b"other")
        assert running.result(60).json()["error"]["kind"] in ("out_of_fuel", "timeout")  # a loaded machine
        assert queued.result(60).json()["output"] == "other"
    assert busy, "the first invocation ended before the second was tried"
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert "1 invocations in progress" in r.json()["error"]
    assert tenant.admin.post("/v1/functions/echo/invoke", content=b"now").json()["output"] == "now"
    other.close()


def test_responses_are_not_cacheable(tenant: Tenant) -> None:
    r = tenant.admin.get("/v1/namespace")
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    assert json.loads(r.text)["namespace"] == tenant.name
