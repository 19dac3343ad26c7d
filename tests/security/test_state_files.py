"""Finding 6: state files are the owner's alone.

Attack: another local user reads the SQLite database, its WAL or SHM (module bytes and outbox messages
are plaintext in them) or the master key: they were created 0644. The state folder is created 0700,
every state file 0600, and files left looser by an older version are tightened when opened.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wasmhost.services import Services, Settings

ROOT = Path(__file__).resolve().parents[2]
FILES = ("wasmhost.db", "wasmhost.db-wal", "wasmhost.db-shm", "master.key")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def common_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells and service managers give
    try:
        yield
    finally:
        os.umask(old)


async def _use(state: Path) -> None:
    services = await Services.open(Settings(db_url=f"sqlite:///{state / 'wasmhost.db'}"))
    try:
        if not await services.store.namespace_exists("acme"):
            await services.store.create_namespace("acme")
        await services.store.register_device("acme", "alice", "phone", "outbox", "tok")
        for name in FILES:
            assert (state / name).exists(), name
            assert mode(state / name) == 0o600, (name, oct(mode(state / name)))
    finally:
        await services.aclose()


async def test_a_new_state_folder_and_its_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMHOST_MASTER_KEY", raising=False)
    state = tmp_path / "state"
    await _use(state)
    assert mode(state) == 0o700
    assert mode(state / "modules") == 0o700  # compiled artifacts of tenants' code


async def test_loose_files_from_before_are_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WASMHOST_MASTER_KEY", raising=False)
    state = tmp_path / "state"
    await _use(state)
    for name in FILES:  # the WAL and SHM went with the last connection: leave loose ones behind
        (state / name).touch()
        (state / name).chmod(0o644)
    await _use(state)


def test_the_cli_creates_private_state(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env["WASMHOST_DB"] = f"sqlite:///{tmp_path / 'state' / 'wasmhost.db'}"
    proc = subprocess.run([sys.executable, "-m", "wasmhost", "namespace", "create", "acme"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "state") == 0o700
    for name in ("wasmhost.db", "master.key"):
        assert mode(tmp_path / "state" / name) == 0o600, name
    for name in ("wasmhost.db-wal", "wasmhost.db-shm"):
        if (tmp_path / "state" / name).exists():
            assert mode(tmp_path / "state" / name) == 0o600, name
