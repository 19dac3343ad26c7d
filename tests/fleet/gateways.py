"""Real gateway processes (`python -m wasmhost serve`) sharing one PostgreSQL, and a tenant to drive them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

__all__ = ["ADMIN_TOKEN", "GatewayProcess", "Tenant", "create_tenant", "metric"]

ADMIN_TOKEN = "fleet-operator-token-0123456789abcdef"
MASTER_KEY = "1:" + "ab" * 32  # every gateway of a fleet shares the master key ring
STARTUP_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """One `wasmhost serve` process; its stderr (the gateway's log) goes to a file the tests can read."""

    def __init__(self, name: str, db_url: str, tmp: Path, **env: str) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"gateway-{name}.log"
        state = tmp / f"state-{name}"
        self.env = {
            **os.environ,
            "WASMHOST_ADMIN_TOKEN": ADMIN_TOKEN,
            "WASMHOST_MASTER_KEY": MASTER_KEY,
            "WASMHOST_STATE_DIR": str(state),
            "WASMHOST_ALLOW_PRIVATE_ENDPOINTS": "1",  # the push fakes listen on loopback
            "WASMHOST_METRICS_PUBLIC": "1",  # scraped on a private network
            "PYTHONUNBUFFERED": "1",
            "WASMHOST_WORKERS": "1",  # one process per gateway unless a test asks for more
            **env,
        }
        self.args = [sys.executable, "-m", "wasmhost", "--db", db_url, "serve", "--host", "127.0.0.1",
                     "--port", str(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway {self.name} exited at start:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {self.name} did not start:\n{self.log()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def client(self, token: str | None = None, **headers: str) -> httpx.AsyncClient:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)


def metric(text: str, name: str) -> float:
    """One unlabelled sample from a Prometheus text page (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


@dataclass
class Tenant:
    name: str
    api_key: str
    jwt_secret: str

    def admin(self, gw: GatewayProcess) -> httpx.AsyncClient:
        return gw.client(self.api_key)

    def user(self, gw: GatewayProcess, sub: str) -> httpx.AsyncClient:
        token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, self.jwt_secret, algorithm="HS256")
        return gw.client(token, **{"X-Wasmhost-Namespace": self.name})


async def create_tenant(gw: GatewayProcess, prefix: str = "t") -> Tenant:
    name = f"{prefix}-{secrets.token_hex(4)}"
    async with gw.client(ADMIN_TOKEN) as op:
        r = await op.post("/v1/namespaces", json={"name": name})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
    tenant = Tenant(name, body["api_key"], secrets.token_hex(32))
    async with tenant.admin(gw) as admin:
        r = await admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": tenant.jwt_secret})
        assert r.status_code == 200, r.text
    return tenant
