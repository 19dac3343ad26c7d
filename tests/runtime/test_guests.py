"""The welcome guest (C and WAT), the reproducible C build, and a run through the real push manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wasmhost.providers import ProviderPool, default_specs
from wasmhost.push import Defaults, Manager
from wasmhost.runtime import Runtime
from wasmhost.store import SQLiteStore

from .helpers import WELCOME, FakeSender

GUESTS = {"c": (WELCOME / "welcome.wasm").read_bytes(), "wat": (WELCOME / "welcome.wat").read_text()}


@pytest.mark.parametrize("lang", sorted(GUESTS))
async def test_welcome_sends_and_summarises(lang: str) -> None:
    sender = FakeSender(devices=2)
    runtime = Runtime(sender)
    try:
        result = await runtime.invoke("acme", GUESTS[lang], b'{"user": "alice", "name": "Ann \\"A\\" Lee"}')
        assert result.ok, (result.code, result.logs)
        assert result.output == "welcomed alice: 2/2 devices"
        ((namespace, user, message, deadline),) = sender.calls
        assert (namespace, user) == ("acme", "alice") and deadline is not None
        assert message.title == 'Welcome, Ann "A" Lee!'
        assert message.body.startswith('Thanks for joining, Ann "A" Lee.')
        assert message.data == {"kind": "welcome"}
        assert result.sends[0]["devices_succeeded"] == 2

        result = await runtime.invoke("acme", GUESTS[lang], b'{"user": "bob"}')
        assert result.ok and sender.calls[-1][2].title == "Welcome, bob!"
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("lang", sorted(GUESTS))
@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"not json",
        b'{"name": "x"}',
        b'{"user": ""}',
        b'{"user": 5}',
        b'["user", "alice"]',
        b'{"user": "a"',
        b'{"user": "a"} x',
        b'{"user": "a", "name": }',
    ],
)
async def test_welcome_rejects_input_it_cannot_parse(runtime: Runtime, lang: str, bad: bytes) -> None:
    result = await runtime.invoke("acme", GUESTS[lang], bad)
    assert result.code == 1 and result.error is None
    assert result.logs and result.logs[0].level == "error" and "user" in result.logs[0].message
    assert result.sends == []


@pytest.mark.parametrize("lang", sorted(GUESTS))
async def test_welcome_does_not_match_keys_inside_other_values(runtime: Runtime, lang: str) -> None:
    doc = b'{"meta": {"user": "mallory"}, "note": "\\"user\\": \\"eve\\"", "user": "carol"}'
    result = await runtime.invoke("acme", GUESTS[lang], doc)
    assert result.ok and result.output == "welcomed carol: 1/1 devices"


@pytest.mark.parametrize("lang", sorted(GUESTS))
async def test_welcome_reads_counts_from_a_report_larger_than_its_buffer(lang: str) -> None:
    runtime = Runtime(FakeSender(devices=40))
    try:
        result = await runtime.invoke("acme", GUESTS[lang], b'{"user": "alice"}')
        assert len(json.dumps(result.sends[0])) > 4096
        assert result.ok and result.output == "welcomed alice: 40/40 devices"
    finally:
        await runtime.aclose()


def _zig_works() -> bool:
    try:
        subprocess.run([sys.executable, "-m", "ziglang", "version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.mark.skipif(not _zig_works(), reason="python -m ziglang is not available")
def test_checked_in_welcome_wasm_is_the_build_of_welcome_c(tmp_path: Path) -> None:
    work = tmp_path / "welcome"
    work.mkdir()
    shutil.copy(WELCOME / "welcome.c", work / "welcome.c")
    shutil.copy(WELCOME / "build.sh", work / "build.sh")
    (tmp_path / "sdk" / "c").mkdir(parents=True)
    shutil.copy(WELCOME.parent / "sdk" / "c" / "wasmhost.h", tmp_path / "sdk" / "c" / "wasmhost.h")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["sh", str(work / "build.sh")], check=True, env=env, timeout=300, capture_output=True)
    assert (work / "welcome.wasm").read_bytes() == GUESTS["c"], "welcome.wasm is stale: run build.sh and commit it"


async def test_welcome_through_the_real_manager_and_outbox(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.create_namespace("acme")
    await sqlite_store.create_namespace("other")
    await sqlite_store.register_device("acme", "alice", "phone", "outbox", "tok-phone")
    await sqlite_store.register_device("acme", "alice", "tablet", "outbox", "tok-tablet")
    await sqlite_store.register_device("other", "alice", "phone", "outbox", "tok-other")
    manager = Manager(
        sqlite_store, ProviderPool(default_specs(sqlite_store)), Defaults(credentials={"outbox": {}})
    )
    runtime = Runtime(manager)
    try:
        result = await runtime.invoke("acme", GUESTS["c"], b'{"user": "alice", "name": "Alice"}')
        assert result.ok, result.to_dict()
        assert result.output == "welcomed alice: 2/2 devices"
        deliveries = await sqlite_store.list_deliveries("acme")
        assert sorted(d.device_id for d in deliveries) == ["phone", "tablet"]
        assert all(d.user_id == "alice" and d.message["title"] == "Welcome, Alice!" for d in deliveries)
        assert await sqlite_store.list_deliveries("other") == []
        report = result.sends[0]
        assert report["devices_attempted"] == 2 and "tok-" not in json.dumps(result.to_dict())

        result = await runtime.invoke("acme", GUESTS["c"], b'{"user": "nobody"}')
        assert result.ok and result.output == "welcomed nobody: 0/0 devices"
    finally:
        await runtime.aclose()
        await manager.aclose()
