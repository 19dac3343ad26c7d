"""A real `wasmhost serve` process keeps its memory bounded however many namespaces have sent once.

1,000 namespaces, each with the outbox and APNs configured, a user with one device of each, and one
send through the HTTP API. Half trust the APNs fake's CA (those sends succeed over TLS + HTTP/2); the
other half trust the public roots (the fake's certificate does not verify: the send fails, but the
provider and its TLS context were built). Without closing unused providers and sharing TLS contexts,
every namespace would keep a provider, and each of those a loaded CA store, for good.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.gateway.identity import new_api_key
from wasmhost.providers.apns import ApnsSpec
from wasmhost.store import SQLiteStore
from wasmhost.store.sealing import parse_keyring
from wasmhost.testing.apns import FakeAPNs, make_ca

pytestmark = pytest.mark.slow

NAMESPACES = 1000
#: The gateway's resident memory after every namespace sent once (its own baseline is under 100 MB).
MAX_RSS_MB = 300
MASTER_KEY = "1:" + "cd" * 32
ADMIN_TOKEN = "memory-operator-token-0123456789abcdef"
TEAM, KEY_ID, BUNDLE = "TEAM123456", "KEY1234567", "com.example.app"
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _populate(db: Path, fake: FakeAPNs, ca_pem: str, p8: ec.EllipticCurvePrivateKey) -> list[tuple[str, str]]:
    pem = p8.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()
    base = {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": BUNDLE, "p8_key": pem, "environment": "sandbox",
            "endpoint": fake.url}
    spec = ApnsSpec(allow_private_endpoints=True)
    trusted, public = spec.validate({**base, "ca_bundle": ca_pem}), spec.validate(base)
    tenants: list[tuple[str, str]] = []
    store = await SQLiteStore(db, parse_keyring(MASTER_KEY)).open()
    try:
        for i in range(NAMESPACES):
            name = f"tenant-{i:04d}"
            await store.create_namespace(name)
            key_id, api_key, key_hash = new_api_key()
            await store.add_api_key(name, key_id, key_hash)
            await store.put_credentials(name, "outbox", {})
            await store.put_credentials(name, "apns", trusted if i % 2 else public)
            await store.register_device(name, "alice", "inbox", "outbox", "alice-inbox")
            await store.register_device(name, "alice", "phone", "apns", f"{i:064x}")
            tenants.append((name, api_key))
    finally:
        await store.aclose()
    return tenants


async def test_gateway_memory_stays_bounded_after_a_thousand_namespaces_send(tmp_path: Path) -> None:
    _, server_tls, ca_pem = make_ca()
    p8 = ec.generate_private_key(ec.SECP256R1())
    fake = await FakeAPNs(server_tls).start()
    fake.add_key(TEAM, KEY_ID, p8.public_key())
    proc: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "gateway.log").open("wb")
    try:
        db = tmp_path / "wasmhost.db"
        tenants = await _populate(db, fake, ca_pem, p8)
        port = _free_port()
        env = {**os.environ, "WASMHOST_ADMIN_TOKEN": ADMIN_TOKEN, "WASMHOST_MASTER_KEY": MASTER_KEY,
               "WASMHOST_STATE_DIR": str(tmp_path / "state"), "WASMHOST_ALLOW_PRIVATE_ENDPOINTS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "wasmhost", "--db", f"sqlite:///{db}", "serve", "--host", "127.0.0.1",
             "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not start"
                await asyncio.sleep(0.05)
            results: dict[str, Any] = {}
            for i, (_, api_key) in enumerate(tenants):
                r = await client.post("/v1/push/send", json={"user_id": "alice", "title": "hi"},
                                      headers={"Authorization": f"Bearer {api_key}"})
                assert r.status_code in (200, 207), r.text
                for result in r.json()["results"]:
                    results[f"{i}:{result['provider']}"] = result["success"]
        delivered_apns = sum(1 for k, ok in results.items() if k.endswith(":apns") and ok)
        assert all(ok for k, ok in results.items() if k.endswith(":outbox"))
        assert delivered_apns == NAMESPACES // 2  # the half that trusts the fake's CA
        rss = _rss_mb(proc.pid)
        assert rss < MAX_RSS_MB, f"gateway RSS {rss:.0f} MB after {NAMESPACES} namespaces sent once"
        assert fake.connections <= NAMESPACES // 2
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()
        await fake.aclose()
