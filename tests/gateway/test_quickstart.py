"""docs/gateway.md as a tenant uses it: the serve line and the tenant quickstart, run exactly as written
(with bash and curl) against a real `wasmhost serve` process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gateway.md"
TOKEN = "operator-token-for-the-quickstart-test"


def _section_block(heading: str | None) -> str:
    """The first ```sh block after `heading` (or in the whole document)."""
    text = DOC.read_text()
    if heading is not None:
        text = text.split(f"\n## {heading}\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", text, re.S)
    assert match, f"no sh block under {heading!r}"
    return match.group(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("openssl") is None, reason="needs curl and openssl")
def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    # `wasmhost` and `python3` on PATH are this checkout and its environment (as a pip install provides).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("wasmhost", "-m wasmhost "), ("python3", "")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {command}"$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT), WASMHOST_ADMIN_TOKEN=TOKEN,
               WASMHOST_MASTER_KEY="cd" * 32)

    [serve_line] = [ln for ln in _section_block(None).splitlines() if ln.startswith("wasmhost serve")]
    assert "--db" in serve_line.split("serve", 1)[1]  # the documented order: --db after the command
    port = _free_port()
    state = tmp_path / "state"
    state.mkdir()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(["bash", "-c", serve_line.replace("--port 8080", f"--port {port}")], cwd=state,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        assert (state / "wasmhost.db").exists()  # the documented --db was used

        script = _section_block("Tenant quickstart")
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                              env={**env, "WASMHOST_URL": base}, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        docs = [json.loads(line) for line in re.sub(r"}\s*{", "}\n{", proc.stdout.strip()).splitlines()]
        invoke = next(d for d in docs if "fuel_used" in d)
        assert invoke["ok"] and invoke["output"].strip() == "welcomed alice: 1/1 devices"
        outbox = docs[-1]
        [delivery] = outbox["deliveries"]
        assert (delivery["user"], delivery["device_id"]) == ("alice", "phone")
        assert delivery["message"]["title"] == "Welcome, Alice!"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        log.close()
