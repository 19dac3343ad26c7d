"""Nothing accepted is lost: a real gateway accepting sends toward a slow ntfy server is killed with
SIGKILL mid-delivery and restarted on the same SQLite file; every accepted send then reaches every
device, no more duplicates than deliveries were in flight at the kill, and nothing after its TTL."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from wasmhost.testing.ntfy import FakeNtfy

pytestmark = pytest.mark.asyncio

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operator-token-for-the-crash-test"
USERS = 4
SENDS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ENV = {"WASMHOST_MASTER_KEY": "1:" + "ab" * 32}


def _device_add(db: Path, user: str, topic: str, ntfy: str) -> None:
    """Through the CLI, on the gateway's file (device registration over HTTP needs a user JWT)."""
    proc = subprocess.run(
        [sys.executable, "-m", "wasmhost", "--db", f"sqlite:///{db}", "device", "add", "--namespace", "crash",
         "--user", user, "--provider", "ntfy", "--token", topic, "--device-id", "phone"],
        cwd=ROOT, env={**os.environ, **ENV, "WASMHOST_DEFAULT_NTFY_URL": ntfy}, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


async def _serve(db: Path, port: int, ntfy: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WASMHOST_ADMIN_TOKEN": TOKEN, "WASMHOST_DB": "", "WASMHOST_DEFAULT_NTFY_URL": ntfy,
           "WASMHOST_DELIVERY_LEASE": "2", "WASMHOST_DELIVERY_POLL": "0.2", "WASMHOST_RETRY_BASE": "0.2",
           "WASMHOST_RETRY_MAX": "0.5", **ENV}
    code = f"from wasmhost.gateway import serve; serve('127.0.0.1', {port}, 'sqlite:///{db}')"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "the gateway exited"
            assert time.monotonic() < deadline, "the gateway did not come up"
            await asyncio.sleep(0.1)


async def test_sigkill_mid_delivery_then_restart_delivers_every_accepted_send(tmp_path: Path) -> None:
    ntfy = await FakeNtfy(delay=0.5).start()
    ntfy.script["expiring"] = ["500"] * 100  # a transient failure every time, until its TTL
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "gw.db"
    proc = await _serve(db, port, ntfy.url)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as op:
            created = (await op.post("/v1/namespaces", json={"name": "crash"},
                                     headers={"Authorization": f"Bearer {TOKEN}"})).json()
        admin = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {created['api_key']}"},
                                  timeout=30)
        for user, topic in [*((f"u{u}", f"topic-u{u}") for u in range(USERS)), ("late", "expiring")]:
            _device_add(db, user, topic, ntfy.url)
        accepted: dict[str, str] = {}  # title -> send_id
        for i in range(SENDS):
            r = await admin.post("/v1/push/send", params={"wait": 0},
                                 json={"user_id": f"u{i % USERS}", "title": f"m{i}", "body": "b"})
            assert r.status_code == 202, r.text
            accepted[f"m{i}"] = r.json()["send_id"]
        r = await admin.post("/v1/push/send", params={"wait": 0},
                             json={"user_id": "late", "title": "too-late", "body": "b", "ttl_seconds": 2})
        assert r.status_code == 202
        late_id = r.json()["send_id"]
        # Mid-delivery: the slow server holds some requests when the gateway dies.
        deadline = time.monotonic() + 30
        while sum(ntfy.attempts.values()) < 3:
            assert time.monotonic() < deadline, "no delivery started"
            await asyncio.sleep(0.05)
        await admin.aclose()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with sqlite3.connect(db) as conn:  # in flight at the kill: leased, result not committed
            [(in_flight,)] = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sending'").fetchall()
        await asyncio.sleep(2.5)  # the dead process's leases and the late message's TTL run out

        proc = await _serve(db, port, ntfy.url)
        admin = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {created['api_key']}"},
                                  timeout=30)
        deadline = time.monotonic() + 60
        while True:
            pending = (await admin.get("/v1/push/sends", params={"state": "pending", "limit": 200})).json()
            if not pending["sends"]:
                break
            assert time.monotonic() < deadline, pending
            await asyncio.sleep(0.2)
        for title, send_id in accepted.items():
            status = (await admin.get(f"/v1/push/sends/{send_id}")).json()
            assert [d["state"] for d in status["deliveries"]] == ["delivered"], (title, status)
        late = (await admin.get(f"/v1/push/sends/{late_id}")).json()
        assert [d["state"] for d in late["deliveries"]] == ["expired"], late
        metrics = (await admin.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
        assert "wasmhost_delivery_queue_depth" in metrics and "wasmhost_delivery_oldest_queued_seconds" in metrics
        assert "# TYPE wasmhost_delivery_transitions counter" in metrics  # per worker process: values vary
        await admin.aclose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await ntfy.aclose()
    seen = Counter(p["title"] for p in ntfy.published)
    assert set(accepted) <= set(seen)  # every accepted send reached its device
    assert sum(n - 1 for n in seen.values()) <= in_flight  # duplicates: at most what was in flight at the kill
    assert "too-late" not in seen  # nothing after its TTL
