"""Finding 3: devices per user are capped.

Attack: one end user registered 1,001 devices; one send then made 1,001 deliveries, some of them to Web
Push endpoints of the user's choosing (an amplifier toward third parties). The cap
(``WASMHOST_MAX_DEVICES_PER_USER``) holds on both stores, under concurrent registrations too; the
next registration is a 409 naming the cap; re-registering a device id or a token the user already has
still works.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.harness import GatewayServer, create_tenant
from tests.store.conftest import Backend
from wasmhost.services import Settings
from wasmhost.store import KeyRing, StoreError, TooManyDevices

CAP = 3


async def _fill(store: Any, user: str = "mallory") -> None:
    for i in range(CAP):
        await store.register_device("ns", user, f"dev{i}", "outbox", f"tok{i}")


async def test_the_cap_holds_and_names_itself(store: Any) -> None:
    store.max_devices_per_user = CAP
    await store.create_namespace("ns")
    await _fill(store)
    with pytest.raises(TooManyDevices) as info:
        await store.register_device("ns", "mallory", "one-more", "outbox", "tok-more")
    assert isinstance(info.value, StoreError)
    assert str(CAP) in str(info.value) and "WASMHOST_MAX_DEVICES_PER_USER" in str(info.value)
    # Re-registering what the user has is not a new device.
    await store.register_device("ns", "mallory", "dev0", "outbox", "tok0-rotated")
    await store.register_device("ns", "mallory", "renamed", "outbox", "tok1")  # tok1 moves to "renamed"
    assert len(await store.list_user_devices("ns", "mallory")) == CAP
    # Another user, and the same user in another namespace, have their own allowance.
    await store.register_device("ns", "alice", "phone", "outbox", "tok-alice")
    await store.create_namespace("other")
    await store.register_device("other", "mallory", "phone", "outbox", "tok-other")


async def test_concurrent_registrations_cannot_exceed_the_cap(backend: Backend, keyring: KeyRing) -> None:
    # Two store instances (two gateways) on one database, registering at once.
    stores = [await backend.open(keyring), await backend.open(keyring)]
    for s in stores:
        s.max_devices_per_user = CAP
    await stores[0].create_namespace("ns")

    async def register(i: int) -> bool:
        try:
            await stores[i % 2].register_device("ns", "mallory", f"dev{i}", "outbox", f"tok{i}")
        except TooManyDevices:
            return False
        return True

    results = await asyncio.gather(*(register(i) for i in range(12)))
    assert sum(results) == CAP
    assert len(await stores[0].list_user_devices("ns", "mallory")) == CAP


def test_http_registration_over_the_cap_is_a_409(tmp_path: Path) -> None:
    gw = GatewayServer(tmp_path, max_devices_per_user=CAP).start()
    try:
        tenant = create_tenant(gw, "capped")
        with tenant.user("mallory") as user:
            for i in range(CAP):
                r = user.post("/v1/push/devices", json={"device_id": f"d{i}", "provider": "outbox", "token": f"t{i}"})
                assert r.status_code == 200, r.text
            r = user.post("/v1/push/devices", json={"device_id": "extra", "provider": "outbox", "token": "tx"})
            assert r.status_code == 409, r.text
            assert f"{CAP} devices" in r.json()["error"]
            again = user.post("/v1/push/devices", json={"device_id": "d0", "provider": "outbox", "token": "t0b"})
            assert again.status_code == 200, again.text
        tenant.close()
    finally:
        gw.stop()


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().max_devices_per_user == 32
    monkeypatch.setenv("WASMHOST_MAX_DEVICES_PER_USER", "5")
    assert Settings.from_env().max_devices_per_user == 5


def test_cli_registration_over_the_cap_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env.update(WASMHOST_DB=f"sqlite:///{tmp_path / 'wasmhost.db'}", WASMHOST_MASTER_KEY="ab" * 32,
               WASMHOST_MAX_DEVICES_PER_USER="1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "wasmhost", *args], capture_output=True, text=True,
                              env=env, timeout=120, cwd=tmp_path)

    assert run("namespace", "create", "acme", "--outbox").returncode == 0
    add = ("device", "add", "--namespace", "acme", "--user", "u", "--provider", "outbox")
    assert run(*add, "--token", "t1", "--device-id", "a").returncode == 0
    proc = run(*add, "--token", "t2", "--device-id", "b")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 devices" in lines[0] and "WASMHOST_MAX_DEVICES_PER_USER" in lines[0], proc.stderr
