"""The gateway under a real load generator: `wasmhost serve` against wrk, with a bare route as the floor.

``python -m bench.gateway [--quick] [--db URL] [--workers N]``; the last line is JSON (see `main`).

* Floor: a bare FastAPI route served exactly as the gateway is (`bench.floor`: same worker processes,
  uvloop, httptools, server settings), measured in the same run.
* Invoke: ``POST /v1/functions/welcome/invoke`` — the welcome guest sends one push to a user with one
  outbox device (the push is delivered before the response). Send: ``POST /v1/push/send`` to the same
  user. 1 connection for latency (p50/p99), 16 for throughput.
* ``apns_invoke_p50_ms``: the welcome guest to a user whose one device is on the APNs loopback fake
  (TLS, HTTP/2), one connection.
* ``rss_mb``: the resident memory of every gateway process after 1,000 namespaces each configured with
  the outbox and APNs, a device and one send each, 100 functions deployed and invoked, and 256
  dispatchers built.
* ``victim_p99_ms``: a second namespace's invoke while an attacker runs each attack of `bench.attacks`
  at its concurrency cap; the worst p99 over the attacks.

wrk shares the two cores with the server: its own CPU is part of every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt

from .wrk import WrkResult, require_wrk, wrk

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-operator-token-0123456789abcdef"
MASTER_KEY = "1:" + "be" * 32
WELCOME = ROOT / "guest_examples" / "welcome" / "welcome.wasm"
WELCOME_INPUT = b'{"user":"alice","name":"Alice"}'
SEND_BODY = b'{"user_id":"alice","title":"Hi","body":"there"}'
STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A `wasmhost serve` (or `bench.floor`) process on a free port, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.proc = subprocess.Popen([*args, "--port", str(self.port)], env=env, cwd=ROOT, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.log_path = log

    def wait_ready(self, path: str, method: str = "GET") -> Server:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log_path.read_text()}")
            try:
                if httpx.request(method, self.url + path, timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server process and its workers."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [self.proc.pid, *(int(p) for p in out.split())]

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextmanager
def gateway(tmp: Path, db_url: str, workers: int, **env: str) -> Iterator[Server]:
    state = tmp / f"state-{secrets.token_hex(3)}"
    environ = {
        **os.environ,
        "WASMHOST_ADMIN_TOKEN": ADMIN_TOKEN,
        "WASMHOST_MASTER_KEY": MASTER_KEY,
        "WASMHOST_STATE_DIR": str(state),
        "WASMHOST_ALLOW_PRIVATE_ENDPOINTS": "1",
        "WASMHOST_SENDS_PER_MINUTE": "100000000",  # the caps would be the benchmark otherwise
        "WASMHOST_MAX_CONCURRENT_INVOCATIONS": "64",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    if db_url == "sqlite":
        db_url = f"sqlite:///{state / 'wasmhost.db'}"
    server = Server([sys.executable, "-m", "wasmhost", "--db", db_url, "serve", "--host", "127.0.0.1",
                     "--workers", str(workers)], environ, tmp / "gateway.log")
    try:
        yield server.wait_ready("/healthz")
    finally:
        server.stop()


@contextmanager
def floor(tmp: Path, workers: int) -> Iterator[Server]:
    server = Server([sys.executable, "-m", "bench.floor", "--workers", str(workers)],
                    {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp / "floor.log")
    try:
        yield server.wait_ready("/floor", "POST")
    finally:
        server.stop()


class Tenant:
    """A namespace set up over the public API: outbox on, user-token auth, alice with one device."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as op:
            r = op.post("/v1/namespaces", json={"name": name})
            r.raise_for_status()
            self.api_key: str = r.json()["api_key"]
        self.secret = secrets.token_hex(32)
        with self.admin() as admin:
            admin.put("/v1/namespace/push-credentials/outbox", json={}).raise_for_status()
            admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": self.secret}).raise_for_status()
            admin.put("/v1/functions/welcome", content=WELCOME.read_bytes(),
                      headers={"Content-Type": "application/wasm"}).raise_for_status()
        self.add_device("alice", "outbox", "phone", "outbox-token-alice")

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=30)

    def add_device(self, user: str, provider: str, device_id: str, token: str) -> None:
        user_jwt = jwt.encode({"sub": user, "exp": int(time.time()) + 3600}, self.secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {user_jwt}", "X-Wasmhost-Namespace": self.name}
        r = httpx.post(self.url + "/v1/push/devices", headers=headers,
                       json={"device_id": device_id, "provider": provider, "token": token}, timeout=30)
        r.raise_for_status()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _check(result: WrkResult, what: str) -> WrkResult:
    if result.errors:
        raise RuntimeError(f"{what}: {result.errors} failed requests under load")
    return result


def measure_paths(tmp: Path, db: str, workers: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with floor(tmp, workers) as fl:
        url = fl.url + "/floor"
        wrk(url, method="POST", body=WELCOME_INPUT, seconds=1)  # warm up
        one = _check(wrk(url, method="POST", body=WELCOME_INPUT, seconds=seconds), "floor")
        many = _check(wrk(url, method="POST", body=WELCOME_INPUT, connections=16, seconds=seconds), "floor")
        out.update(floor_p50_ms=one.p50_ms, floor_p99_ms=one.p99_ms, floor_rps=many.rps)
    with gateway(tmp, db, workers) as gw:
        tenant = Tenant(gw.url, "bench")
        invoke_url = gw.url + "/v1/functions/welcome/invoke"
        send_url = gw.url + "/v1/push/send"
        json_auth = {**tenant.auth, "Content-Type": "application/json"}
        wrk(invoke_url, method="POST", body=WELCOME_INPUT, headers=json_auth, connections=4, seconds=1)  # warm up
        one = _check(wrk(invoke_url, method="POST", body=WELCOME_INPUT, headers=json_auth, seconds=seconds), "invoke")
        many = _check(wrk(invoke_url, method="POST", body=WELCOME_INPUT, headers=json_auth, connections=16,
                          seconds=seconds), "invoke")
        out.update(invoke_p50_ms=one.p50_ms, invoke_p99_ms=one.p99_ms, invoke_rps=many.rps,
                   invoke_p50_ms_16=many.p50_ms)
        one = _check(wrk(send_url, method="POST", body=SEND_BODY, headers=json_auth, seconds=seconds), "send")
        many = _check(wrk(send_url, method="POST", body=SEND_BODY, headers=json_auth, connections=16,
                          seconds=seconds), "send")
        out.update(send_p50_ms=one.p50_ms, send_p99_ms=one.p99_ms, send_rps=many.rps)
        health = _check(wrk(gw.url + "/healthz", seconds=seconds), "healthz")
        out.update(healthz_p50_ms=health.p50_ms)
    out["invoke_vs_floor"] = out["invoke_p50_ms"] / out["floor_p50_ms"]
    out["invoke_rps_vs_floor"] = out["invoke_rps"] / out["floor_rps"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute in all)")
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a fresh file) or a postgresql:// URL")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    require_wrk()
    seconds = 3.0 if args.quick else 10.0
    with tempfile.TemporaryDirectory(prefix="wasmhost-bench-") as tmp:
        result: dict[str, Any] = {"db": args.db.split(":", 1)[0], "workers": args.workers}
        result.update(measure_paths(Path(tmp), args.db, args.workers, seconds))
    for key, value in result.items():
        print(f"{key:>24}: {round(value, 3) if isinstance(value, float) else value}", file=sys.stderr)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
