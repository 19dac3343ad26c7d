"""A real gateway on 127.0.0.1: uvicorn serving `create_app` on its own thread and event loop.

Tests talk to it with a plain `httpx.Client`, exactly as a tenant would. Loopback fakes of push
services run on the server's loop (`run`), so nothing in the test thread needs an event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import uvicorn

from wasmhost.gateway import GatewayConfig, create_app
from wasmhost.services import Settings

T = TypeVar("T")

ADMIN_TOKEN = "operator-token-for-tests-0123456789"
STARTUP_TIMEOUT = 30.0


class GatewayServer:
    def __init__(self, tmp: Path, config: GatewayConfig | None = None, **settings: Any) -> None:
        settings.setdefault("db_url", f"sqlite:///{tmp / 'wasmhost.db'}")
        self.settings = Settings(**settings)
        # One server serves a whole test module from one address: its deliberate failed logins must not
        # add up to the auth throttle (tests/security/test_gateway_access.py tests it with its own budget).
        self.config = config or GatewayConfig(admin_token=ADMIN_TOKEN, auth_failures_per_minute=100_000)
        self.app = create_app(self.settings, self.config)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket says TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, lifespan="on", log_level="warning", timeout_graceful_shutdown=10)
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="gateway-under-test", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # surfaced by start()
            self.error = exc
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())

    def start(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"gateway failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("gateway did not start")
            time.sleep(0.01)
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the server's loop (for loopback fakes) and return its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if not self.loop.is_closed() and not self.thread.is_alive():
            self.loop.close()
        self.sock.close()

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0)


def hs256_token(secret: str, sub: str, *, exp_in: float = 300, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + exp_in), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass
class Tenant:
    """A namespace as its owner sees it: the API key, a client that sends it, and its JWT secret."""

    server: GatewayServer
    name: str
    key: str
    key_id: str
    jwt_secret: str = ""
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = self.server.client(self.key)

    def user(self, sub: str, token: str | None = None) -> httpx.Client:
        """A client for one app user of this tenant (a fresh HS256 token unless one is given)."""
        token = token or hs256_token(self.jwt_secret, sub)
        return self.server.client(token, **{"X-Wasmhost-Namespace": self.name})

    def close(self) -> None:
        self.admin.close()


def create_tenant(server: GatewayServer, name: str, *, outbox: bool = True, jwt_secret: str | None = None) -> Tenant:
    """Operator creates the namespace; the tenant turns on the outbox and HS256 user tokens."""
    with server.client(ADMIN_TOKEN) as op:
        r = op.post("/v1/namespaces", json={"name": name})
        assert r.status_code == 201, r.text
        body = r.json()
    tenant = Tenant(server, name, body["api_key"], body["key_id"], jwt_secret or f"{name}-secret-" + "x" * 64)
    if outbox:
        r = tenant.admin.put("/v1/namespace/push-credentials/outbox", json={})
        assert r.status_code == 200, r.text
    r = tenant.admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": tenant.jwt_secret})
    assert r.status_code == 200, r.text
    return tenant


def metric(server: GatewayServer, name: str, **labels: str) -> float:
    """One sample from the served /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    with server.client(ADMIN_TOKEN) as c:
        text = c.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)
