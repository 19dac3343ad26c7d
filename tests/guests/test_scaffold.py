"""`wasmhost new` for every language: the project's README commands, run as written, build it, run it
with `wasmhost run` and deploy it with curl to a real gateway, which then invokes it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import ADMIN_TOKEN, GatewayServer
from wasmhost.scaffold import LANGUAGES

from .toolchains import EXAMPLES, build_env, require_toolchain

#: Ceilings well above what each build gives (the README states the expected size): a regression to
#: an untuned build (a multi-megabyte Rust module, a Python component over the deploy cap) fails.
MAX_BYTES = {"c": 16 << 10, "zig": 128 << 10, "rust": 256 << 10, "assemblyscript": 64 << 10,
             "javascript": 4 << 20, "python": 32 << 20}
NODE_PROJECTS = {"assemblyscript", "javascript"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayServer, str]]:
    server = GatewayServer(tmp_path_factory.mktemp("gateway")).start()
    try:
        with server.client(ADMIN_TOKEN) as op:
            key = op.post("/v1/namespaces", json={"name": "acme"}).json()["api_key"]
        with server.client(key) as admin:
            assert admin.put("/v1/namespace/push-credentials/outbox", json={}).status_code == 200
        yield server, key
    finally:
        server.stop()


def _blocks(readme: str) -> list[list[str]]:
    """The README's sh blocks as commands (backslash continuations joined, comments dropped)."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", readme, re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks.append([line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()])
    return blocks


@pytest.mark.slow
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_new_project_builds_runs_and_deploys_as_written(
    language: str, tmp_path: Path, gateway: tuple[GatewayServer, str]
) -> None:
    require_toolchain(language)
    server, api_key = gateway
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "wasmhost"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m wasmhost "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in build_env().items() if not k.startswith("WASMHOST_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", WASMHOST_DB=f"sqlite:///{tmp_path / 'state.db'}",
               WASMHOST_MASTER_KEY="ef" * 32, WASMHOST_URL=server.url, API_KEY=api_key)

    def sh(command: str, cwd: Path) -> str:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    name = f"order-shipped-{language[:4]}"
    started = time.monotonic()
    sh(f"wasmhost new {language} {name}", tmp_path)
    project = tmp_path / name
    if language in NODE_PROJECTS:  # the packages CI installed for the example (build.sh would npm install them)
        (project / "node_modules").symlink_to(EXAMPLES / language / "node_modules")
    main, setup, invoke = _blocks((project / "README.md").read_text())
    build, run, deploy = main
    assert build == "./build.sh" and run.startswith("wasmhost run") and deploy.startswith("curl")

    for command in setup:
        sh(command, project)
    sh(build, project)
    wasm = project / (name.replace("-", "_") + ".wasm")
    size = wasm.stat().st_size
    assert 0 < size <= MAX_BYTES[language]
    assert sh(run, project).strip() == "notified alice: 1/1 devices"

    sh(deploy, project)
    elapsed = time.monotonic() - started
    # The gateway has its own devices: register alice's there too, then invoke the deployed function.
    with server.client(api_key) as admin:
        assert admin.put("/v1/namespace/auth", json={"alg": "HS256", "key": "k" * 40}).status_code == 200
    from tests.gateway.harness import hs256_token

    with server.client(hs256_token("k" * 40, "alice"), **{"X-Wasmhost-Namespace": "acme"}) as alice:
        r = alice.post("/v1/push/devices", json={"device_id": "phone", "provider": "outbox", "token": "tok-1"})
        assert r.status_code == 200, r.text
    out = sh(invoke[0], project)
    assert '"ok":true' in out and "notified alice: 1/1 devices" in out, out
    print(f"\n{language}: {size:,} bytes; wasmhost new to deployed in {elapsed:.1f} s")


def test_new_refuses_bad_names_unknown_languages_and_used_folders(tmp_path: Path) -> None:
    def new(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wasmhost", "new", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert new("c", "ok-name").returncode == 0 and (tmp_path / "ok-name" / "ok_name.c").is_file()
    for args, fragment in ((("c", "ok-name"), "already exists and is not empty"),
                           (("c", "9lives"), "bad function name"), (("c", "a/b"), "bad function name")):
        proc = new(*args)
        assert proc.returncode == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr
    proc = new("cobol", "x")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert shutil.which("bash")  # the scripts are bash
