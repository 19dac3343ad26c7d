"""`serve()` as the CLI runs it: a real process, configured from the environment, that finishes the
invocation in flight when told to stop, then exits cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .guests import LOOP

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "operator-token-for-the-serve-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_serve_drains_in_flight_invocations_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WASMHOST_ADMIN_TOKEN": TOKEN, "WASMHOST_DEFAULT_OUTBOX": "1", "WASMHOST_DB": "",
           "WASMHOST_SHUTDOWN_GRACE": "30"}
    code = f"from wasmhost.gateway import serve; serve('127.0.0.1', {port}, 'sqlite:///{tmp_path}/gw.db')"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.05)

        created = httpx.post(f"{base}/v1/namespaces", json={"name": "drain"},
                             headers={"Authorization": f"Bearer {TOKEN}"}).json()
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {created['api_key']}"}, timeout=60)
        assert admin.put("/v1/functions/spin", content=LOOP.encode(), params={"fuel": 1_000_000_000}).status_code == 200

        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(admin.post, "/v1/functions/spin/invoke")
            while _metric(base, "wasmhost_invocations_in_flight") < 1:
                assert not running.done(), "the invocation ended before the signal could be sent"
                time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            r = running.result(timeout=60)
        assert r.status_code == 200 and r.json()["error"]["kind"] == "out_of_fuel"
        admin.close()
        # uvicorn re-raises the signal once it has shut down, so a supervisor sees why it stopped.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        # The lifespan shutdown ran: runtime and provider clients closed (Services.aclose).
        assert "Application shutdown complete" in output and "Traceback" not in output
        assert created["api_key"] not in output
        try:
            httpx.get(f"{base}/healthz", timeout=2)
            raise AssertionError("still serving after shutdown")
        except httpx.TransportError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
