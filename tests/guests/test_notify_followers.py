"""Every example, run with ``wasmhost run`` against one namespace, gives the same summary.

The namespace has real outbox devices (alice two, bob one, carol none) set up with the CLI; the
followers also include an empty id, which the host refuses. Every language must send the same
message and print ``{"sent": 2, "failed": 1, "no_devices": 1}``; the outbox must then hold exactly
what the sends delivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .toolchains import EXAMPLE_LIST, ROOT, Example
from .world import DEVICES, EXPECTED, INPUT, MESSAGE


def wasmhost(db: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("WASMHOST_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "wasmhost", "--db", db, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A state folder with namespace ``acme``: outbox on, alice 2 devices, bob 1, carol none."""
    db = f"sqlite:///{tmp_path_factory.mktemp('state') / 'wasmhost.db'}"
    ok(wasmhost(db, "namespace", "create", "acme", "--outbox"))
    for user, n in DEVICES.items():
        for i in range(n):
            ok(wasmhost(db, "device", "add", "--namespace", "acme", "--user", user, "--provider", "outbox",
                        "--token", f"tok-{user}-{i}", "--device-id", f"{user}-{i}"))
    yield db


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=lambda e: e.lang)
def test_example_prints_the_same_summary(namespace: str, example: Example, tmp_path: Path) -> None:
    source = example.dir / ("notify_followers.wat" if example.lang == "wat" else "notify_followers.wasm")
    input_file = tmp_path / "input.json"
    input_file.write_bytes(INPUT)
    before = len(json.loads(ok(wasmhost(namespace, "outbox", "--namespace", "acme", "--json"))))

    doc = json.loads(ok(wasmhost(namespace, "run", str(source), "--namespace", "acme",
                                 "--input-file", str(input_file), "--json")))
    assert doc["ok"], doc
    assert json.loads(doc["output"]) == EXPECTED
    # Sends to alice, bob, carol were accepted (the empty id was not), and reported per device.
    assert [(s["user_id"], s["devices_attempted"], s["devices_succeeded"]) for s in doc["sends"]] == [
        ("alice", 2, 2), ("bob", 1, 1), ("carol", 0, 0)
    ]
    assert any("user id is empty" in entry["message"] for entry in doc["logs"])

    deliveries = json.loads(ok(wasmhost(namespace, "outbox", "--namespace", "acme", "--json")))
    new = deliveries[: len(deliveries) - before] if deliveries and deliveries[0]["id"] > deliveries[-1]["id"] \
        else deliveries[before:]
    assert sorted((d["user"], d["device_id"]) for d in new) == [("alice", "alice-0"), ("alice", "alice-1"),
                                                               ("bob", "bob-0")]
    for d in new:
        assert d["message"] == MESSAGE, f"{example.lang} built a different message"


@pytest.mark.slow
def test_plain_output_is_the_summary_line(namespace: str, tmp_path: Path) -> None:
    """What the READMEs say `wasmhost run` prints."""
    wat = EXAMPLE_LIST[0].dir / "notify_followers.wat"
    proc = wasmhost(namespace, "run", str(wat), "--namespace", "acme", "--input", INPUT.decode())
    assert ok(proc).strip() == '{"sent":2,"failed":1,"no_devices":1}'
    assert "[warn] [host] push_send_to_user: the user id is empty" in proc.stderr
