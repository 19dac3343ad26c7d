"""The gateway under a real load generator: `wasmhost serve` against wrk, with a bare route as the floor.

``python -m bench.gateway [--quick] [--db URL [--vs-sqlite]] [--workers N]``; the last line is JSON (see
`main`). With ``--vs-sqlite`` the paths are measured on SQLite and then on the PostgreSQL URL in one run,
and ``pg_vs_sqlite_invoke_p50`` (goal ≤ 1.5), ``pg_vs_sqlite_invoke_rps`` (16 connections, goal ≥ 0.7) and
``pg_vs_sqlite_send_rps`` compare them.

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
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .wrk import WrkResult, require_wrk, wrk

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "bench-operator-token-0123456789abcdef"
MASTER_KEY = "1:" + "be" * 32
WELCOME = ROOT / "guest_examples" / "welcome" / "welcome.wasm"
WELCOME_INPUT = b'{"user":"alice","name":"Alice"}'
SEND_BODY = b'{"user_id":"alice","title":"Hi","body":"there"}'
STARTUP_TIMEOUT = 60.0
APNS_TEAM, APNS_KEY_ID = "TEAM123456", "KEY1234567"


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
    state = Path(env.get("WASMHOST_STATE_DIR") or tmp / f"state-{secrets.token_hex(3)}")
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


class LoopThread:
    """An event loop on a thread of its own, for the loopback fakes and the attack load."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _apns_credentials(fake_url: str, ca_pem: str, p8: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    pem = p8.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()
    return {"team_id": APNS_TEAM, "key_id": APNS_KEY_ID, "bundle_id": "com.example.bench", "p8_key": pem,
            "environment": "sandbox", "endpoint": fake_url, "ca_bundle": ca_pem}


def measure_apns(tmp: Path, db: str, workers: int, seconds: float, loop: LoopThread) -> dict[str, Any]:
    """The welcome guest to a user whose one device is on the APNs fake (TLS, HTTP/2), one connection."""
    from wasmhost.testing.apns import FakeAPNs, make_ca

    _, server_tls, ca_pem = make_ca()
    p8 = ec.generate_private_key(ec.SECP256R1())
    fake = loop.run(FakeAPNs(server_tls).start())
    fake.add_key(APNS_TEAM, APNS_KEY_ID, p8.public_key())
    try:
        with gateway(tmp, db, workers) as gw:
            tenant = Tenant(gw.url, "apns")
            with tenant.admin() as admin:
                r = admin.put("/v1/namespace/push-credentials/apns", json=_apns_credentials(fake.url, ca_pem, p8))
                r.raise_for_status()
            tenant.add_device("bob", "apns", "iphone", "ab" * 32)
            url = gw.url + "/v1/functions/welcome/invoke"
            body = b'{"user":"bob","name":"Bob"}'
            headers = {**tenant.auth, "Content-Type": "application/json"}
            with httpx.Client(headers=headers, timeout=30) as client:  # every device delivered, not just answered
                out = client.post(url, content=body).json()
                if not out["ok"] or "1/1" not in out["output"]:
                    raise RuntimeError(f"the APNs fake did not get the push: {out}")
            wrk(url, method="POST", body=body, headers=headers, seconds=1)
            one = _check(wrk(url, method="POST", body=body, headers=headers, seconds=seconds), "apns invoke")
    finally:
        loop.run(fake.aclose())
    return {"apns_invoke_p50_ms": one.p50_ms, "apns_invoke_p99_ms": one.p99_ms}


async def _populate(db_url: str, namespaces: int, apns: dict[str, str]) -> list[str]:
    """Namespaces straight into the store (as many HTTP calls would, only faster): outbox and APNs
    configured, a key, alice with a device on each."""
    from wasmhost.gateway.identity import new_api_key
    from wasmhost.store import open_store, parse_keyring

    store = await open_store(db_url, parse_keyring(MASTER_KEY))
    keys = []
    try:
        for i in range(namespaces):
            name = f"tenant-{i:04d}"
            await store.create_namespace(name)
            key_id, api_key, key_hash = new_api_key()
            await store.add_api_key(name, key_id, key_hash)
            await store.put_credentials(name, "outbox", {})
            await store.put_credentials(name, "apns", apns)
            await store.register_device(name, "alice", "inbox", "outbox", f"inbox-{i}")
            await store.register_device(name, "alice", "phone", "apns", f"{i:064x}")
            keys.append(api_key)
    finally:
        await store.aclose()
    return keys


def measure_memory(tmp: Path, db: str, workers: int, namespaces: int, functions: int,
                   loop: LoopThread) -> dict[str, Any]:
    """RSS of every gateway process after `namespaces` namespaces each sent once (outbox + APNs; every
    dispatcher built, 256 kept), and `functions` functions deployed and invoked."""
    from wasmhost.testing.apns import FakeAPNs, make_ca

    _, server_tls, ca_pem = make_ca()
    p8 = ec.generate_private_key(ec.SECP256R1())
    fake = loop.run(FakeAPNs(server_tls).start())
    fake.add_key(APNS_TEAM, APNS_KEY_ID, p8.public_key())
    welcome = WELCOME.read_bytes()
    try:
        state = tmp / f"memory-{secrets.token_hex(3)}"
        state.mkdir()
        db_url = f"sqlite:///{state / 'wasmhost.db'}" if db == "sqlite" else db
        keys = loop.run(_populate(db_url, namespaces, _apns_credentials(fake.url, ca_pem, p8)), timeout=600)
        with gateway(tmp, db_url, workers, WASMHOST_STATE_DIR=str(state)) as gw:
            async def drive() -> int:
                delivered = 0
                async with httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
                    async def one(i: int, key: str) -> int:
                        auth = {"Authorization": f"Bearer {key}"}
                        if i < functions:
                            r = await client.put("/v1/functions/welcome", content=welcome, headers=auth)
                            r.raise_for_status()
                            r = await client.post("/v1/functions/welcome/invoke", content=WELCOME_INPUT,
                                                  headers=auth)
                            r.raise_for_status()
                        r = await client.post("/v1/push/send", content=SEND_BODY,
                                              headers={**auth, "Content-Type": "application/json"})
                        r.raise_for_status()
                        return int(r.json()["devices_succeeded"])

                    for start in range(0, len(keys), 16):
                        batch = keys[start:start + 16]
                        delivered += sum(await asyncio.gather(*(one(start + j, k) for j, k in enumerate(batch))))
                return delivered

            delivered = loop.run(drive(), timeout=900)
            if delivered != 2 * namespaces:
                raise RuntimeError(f"only {delivered} of {2 * namespaces} deliveries succeeded")
            return {"rss_mb": gw.rss_mb(), "rss_namespaces": namespaces}
    finally:
        loop.run(fake.aclose())


def _starved(result: WrkResult, seconds: float) -> WrkResult:
    """A victim that got no answer at all waited at least the whole run: say so instead of wrk's zeros."""
    if result.requests == 0 or result.errors:
        floor_ms = seconds * 1000.0
        return WrkResult(result.rps, max(result.p50_ms, floor_ms), max(result.p99_ms, floor_ms), result.requests,
                         result.errors)
    return result


async def _pressure(url: str, auth: dict[str, str], stop: asyncio.Event) -> int:
    """Keep `CONCURRENCY` invocations of the attack running until ``stop``; returns how many ran."""
    from .attacks import CONCURRENCY

    async def keep_one() -> int:
        n = 0
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=120) as client:
            while not stop.is_set():
                await client.post("/v1/functions/attack/invoke")
                n += 1
        return n

    return sum(await asyncio.gather(*(keep_one() for _ in range(CONCURRENCY))))


def measure_victims(tmp: Path, db: str, workers: int, seconds: float, loop: LoopThread) -> dict[str, Any]:
    """A second namespace's invoke and /healthz while an attacker keeps `CONCURRENCY` invocations of each
    attack running (default caps, so the attacker is at its per-namespace cap)."""
    from .attacks import ATTACKS, CONCURRENCY, VICTIM, VICTIM_COMPONENT

    out: dict[str, Any] = {}
    worst = 0.0
    for attack in ATTACKS.values():
        with gateway(tmp, db, workers, WASMHOST_MAX_CONCURRENT_INVOCATIONS=str(CONCURRENCY)) as gw:
            attacker, victim = Tenant(gw.url, "attacker"), Tenant(gw.url, "victim")
            query = "&".join(f"{k}={v}" for k, v in attack.limits.items())
            with attacker.admin() as admin:
                admin.put(f"/v1/functions/attack?{query}", content=attack.wasm(),
                          headers={"Content-Type": "application/wasm"}).raise_for_status()
            # A component attack is measured against the other tenant's component: those run on guest threads.
            victim_guest = VICTIM_COMPONENT if attack.name.startswith("component") else VICTIM
            with victim.admin() as admin:
                admin.put("/v1/functions/victim", content=victim_guest.wasm(),
                          headers={"Content-Type": "application/wasm"}).raise_for_status()
            stop = asyncio.Event()

            load = asyncio.run_coroutine_threadsafe(_pressure(gw.url, attacker.auth, stop), loop.loop)
            time.sleep(1.0)  # every attack invocation under way
            victim_url = gw.url + "/v1/functions/victim/invoke"
            inv = _starved(wrk(victim_url, method="POST", headers=victim.auth, seconds=seconds), seconds)
            health = _starved(wrk(gw.url + "/healthz", seconds=seconds), seconds)
            loop.loop.call_soon_threadsafe(stop.set)
            out[f"victim_{attack.name}_p99_ms"] = max(inv.p99_ms, health.p99_ms)
            out[f"victim_{attack.name}_p50_ms"] = inv.p50_ms
            worst = max(worst, inv.p99_ms, health.p99_ms)
            rss = gw.rss_mb()
            out[f"victim_{attack.name}_rss_mb"] = rss
        load.cancel()
    out["victim_p99_ms"] = worst
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute in all)")
    parser.add_argument("--db", default="sqlite", help="'sqlite' (a fresh file) or a postgresql:// URL")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--vs-sqlite", action="store_true",
                        help="with a postgresql:// --db: measure the paths on SQLite too, in this run, and report "
                             "PostgreSQL's ratios to it (pg_vs_sqlite_*)")
    parser.add_argument("--only", action="append", choices=("paths", "apns", "memory", "victims"),
                        help="measure only these parts (repeatable; default all)")
    args = parser.parse_args()
    require_wrk()
    seconds = 3.0 if args.quick else 10.0
    parts = set(args.only or ("paths", "apns", "memory", "victims"))
    loop = LoopThread()
    with tempfile.TemporaryDirectory(prefix="wasmhost-bench-") as tmp:
        result: dict[str, Any] = {"db": args.db.split(":", 1)[0], "workers": args.workers}
        if "paths" in parts:
            if args.vs_sqlite:
                (Path(tmp) / "sqlite").mkdir()
                base = measure_paths(Path(tmp) / "sqlite", "sqlite", args.workers, seconds)
            result.update(measure_paths(Path(tmp), args.db, args.workers, seconds))
            if args.vs_sqlite:
                result.update({f"sqlite_{k}": base[k] for k in ("invoke_p50_ms", "invoke_rps", "send_p50_ms",
                                                                 "send_rps")})
                result.update(pg_vs_sqlite_invoke_p50=result["invoke_p50_ms"] / base["invoke_p50_ms"],
                              pg_vs_sqlite_invoke_rps=result["invoke_rps"] / base["invoke_rps"],
                              pg_vs_sqlite_send_rps=result["send_rps"] / base["send_rps"])
        if "apns" in parts:
            result.update(measure_apns(Path(tmp), args.db, args.workers, seconds, loop))
        if "memory" in parts:
            result.update(measure_memory(Path(tmp), args.db, args.workers, 1000, 100, loop))
        if "victims" in parts:
            result.update(measure_victims(Path(tmp), args.db, args.workers, seconds, loop))
    loop.close()
    for key, value in result.items():
        print(f"{key:>24}: {round(value, 3) if isinstance(value, float) else value}", file=sys.stderr)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
