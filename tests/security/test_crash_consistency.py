"""Finding 10: a ``kill -9`` at any point leaves no half-written row.

A real ``wasmhost serve`` process on SQLite is kept busy registering devices (tokens moving between
users), sending, deploying and invoking functions that send, and rewriting sealed settings, then
killed with SIGKILL at a random moment; this repeats on the same database. After every kill the
database passes ``PRAGMA integrity_check`` and the store's own checks (`wasmhost.store.check`: every
sealed value opens, fingerprints match tokens, one owner per token, modules match their hash,
outbox rows are JSON), and ``wasmhost check`` agrees. What happened to deliveries in flight is the
durable-delivery work's; this is about the rows.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from wasmhost.store import SQLiteStore
from wasmhost.store.check import check_store
from wasmhost.store.sealing import parse_keyring

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "crash-test-operator-token-0123456789abcdef"
MASTER_KEY = "cd" * 32
ROUNDS = 6
USERS = 8


def guest(variant: int) -> str:
    """Sends one push to u1; `variant` changes the module bytes (and so its hash) between deploys."""
    return f"""(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "u1")
  (data (i32.const 64) "{{\\"title\\":\\"v{variant}\\"}}")
  (func (export "handle") (result i32)
    (drop (call $send (i32.const 16) (i32.const 2) (i32.const 64) (i32.const {13 + len(str(variant))})))
    (i32.const 0)))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(self, db: Path, log: Path) -> None:
        self.db = db
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
        self.env.update(WASMHOST_ADMIN_TOKEN=TOKEN, WASMHOST_MASTER_KEY=MASTER_KEY, WASMHOST_DEFAULT_OUTBOX="1",
                        WASMHOST_SENDS_PER_MINUTE="1000000", WASMHOST_MAX_CONCURRENT_INVOCATIONS="64",
                        PYTHONPATH=str(ROOT))
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wasmhost", "--db", f"sqlite:///{self.db}", "serve", "--port", str(port)],
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def _setup(url: str) -> tuple[str, str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as op:
        created = op.post("/v1/namespaces", json={"name": "crashy"})
        assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    secret = "crash-jwt-secret-" + "s" * 40
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as admin:
        assert admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": secret}).status_code == 200
    return key, secret


def _busy(client: httpx.Client, url: str, key: str, secret: str, stop: threading.Event, seed: int,
          done: list[int]) -> None:
    import jwt

    rng = random.Random(seed)
    users = [{"Authorization": "Bearer " + jwt.encode({"sub": f"u{u}", "exp": int(time.time()) + 3600}, secret,
                                                      algorithm="HS256"),
              "X-Wasmhost-Namespace": "crashy"} for u in range(USERS)]
    admin = {"Authorization": f"Bearer {key}"}
    while not stop.is_set():
        what = rng.choice((0, 0, 0, 1, 1, 1, 2, 3, 3, 4, 5))  # deploys compile: keep them rare
        try:
            if what == 0:
                r = client.post(f"{url}/v1/push/devices", headers=users[rng.randrange(USERS)], json={
                    "device_id": f"d{rng.randrange(12)}", "provider": "outbox", "token": f"t{rng.randrange(40)}"})
            elif what == 1:
                r = client.post(f"{url}/v1/push/send", headers=admin, json={
                    "user_id": f"u{rng.randrange(USERS)}", "title": "hi", "data": {"n": rng.randrange(1000)}})
            elif what == 2:
                r = client.put(f"{url}/v1/functions/f{rng.randrange(3)}", headers=admin,
                               content=guest(rng.randrange(4)).encode())
            elif what == 3:
                r = client.post(f"{url}/v1/functions/f{rng.randrange(3)}/invoke", headers=admin)
            elif what == 4:
                r = client.put(f"{url}/v1/push/config", headers=admin,
                               json={"ntfy_auth_token": f"tk{rng.randrange(10**6)}"})
            else:
                r = client.put(f"{url}/v1/namespace/auth", headers=admin, json={"alg": "HS256", "key": secret})
            if r.status_code < 300:
                done[0] += 1
        except httpx.HTTPError:
            time.sleep(0.01)  # the gateway is gone (killed): keep trying until told to stop


async def _check(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:  # recovers the WAL like any next opener would
        verdict = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    problems = [] if verdict == ["ok"] else [f"integrity_check: {v}" for v in verdict]
    store = await SQLiteStore(db, parse_keyring(MASTER_KEY)).open()
    try:
        return problems + await check_store(store)
    finally:
        await store.aclose()


async def test_sigkill_mid_write_leaves_only_whole_rows(tmp_path: Path) -> None:
    db = tmp_path / "state" / "wasmhost.db"
    gateway = Gateway(db, tmp_path / "gateway.log")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    done = [0]
    key = secret = ""
    clients = [httpx.Client(timeout=10) for _ in range(4)]  # made once: each costs a TLS context
    for round_ in range(ROUNDS):
        gateway.start()
        if round_ == 0:
            key, secret = _setup(gateway.url)
        stop = threading.Event()
        workers = [threading.Thread(target=_busy,
                                    args=(c, gateway.url, key, secret, stop, seed + round_ * 10 + i, done))
                   for i, c in enumerate(clients)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(1.0, 3.0))
        gateway.kill()  # mid-write: four clients were busy writing
        stop.set()
        for w in workers:
            w.join(30)
        problems = await _check(db)
        assert problems == [], f"seed {seed}, after kill {round_ + 1}: {problems}"
    for c in clients:
        c.close()
    assert done[0] > ROUNDS * 20, f"too little happened between kills to mean anything ({done[0]} requests)"
    env = {**gateway.env}
    proc = subprocess.run([sys.executable, "-m", "wasmhost", "--db", f"sqlite:///{db}", "check"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "consistent" in proc.stdout, proc.stdout + proc.stderr


async def test_the_checks_find_a_half_written_row(tmp_path: Path) -> None:
    """The checker is not vacuous: a device row whose token was not sealed for it is reported."""
    db = tmp_path / "wasmhost.db"
    ring = parse_keyring(MASTER_KEY)
    store = await SQLiteStore(db, ring).open()
    try:
        await store.create_namespace("acme")
        await store.register_device("acme", "alice", "phone", "outbox", "tok-a")
        await store.register_device("acme", "bob", "phone", "outbox", "tok-b")
        await store.put_function("acme", "f", b"\0asm\1\0\0\0", {})
    finally:
        await store.aclose()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE devices SET token_sealed = (SELECT token_sealed FROM devices WHERE user_id = 'alice')"
                     " WHERE user_id = 'bob'")
        conn.execute("UPDATE devices SET token_fp = 'x' WHERE user_id = 'alice'")
        conn.execute("UPDATE functions SET module = X'0061736d01000000ff'")
        conn.execute("INSERT INTO outbox (namespace, user_id, device_id, message_json, delivered_at)"
                     " VALUES ('acme', 'alice', 'phone', '{\"tit', 0)")
    problems = await _check(db)
    assert any("devices.token_sealed" in p for p in problems), problems
    assert any("token_fp" in p for p in problems), problems
    assert any("functions: acme/f" in p for p in problems), problems
    assert any("outbox" in p for p in problems), problems


async def test_a_consistent_store_passes_on_both_engines(store: Any) -> None:
    await store.create_namespace("acme")
    await store.register_device("acme", "alice", "phone", "outbox", "tok-a")
    await store.register_device("acme", "bob", "phone", "outbox", "tok-a")  # the token moves to bob
    await store.put_function("acme", "f", b"\0asm\1\0\0\0", {})
    await store.put_credentials("acme", "outbox", {})
    await store.record_deliveries("acme", [("bob", "phone", {"title": "hi"})])
    assert await check_store(store) == []
