"""The `wasmhost` command end to end, through real subprocesses on a temp SQLite state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WELCOME = ROOT / "guest_examples" / "welcome" / "welcome.wasm"
KEY = "ab" * 32


def wasmhost(tmp_path: Path, *args: str, key: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env["WASMHOST_DB"] = f"sqlite:///{tmp_path / 'state' / 'wasmhost.db'}"
    if key:
        env["WASMHOST_MASTER_KEY"] = KEY
    return subprocess.run([sys.executable, "-m", "wasmhost", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wasmhost: error:"), proc.stderr
    assert fragment in lines[0]


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    proc = wasmhost(tmp_path, "demo", key=False)
    out = ok(proc)
    assert "welcomed alice: 2/2 devices" in out
    assert out.count("via outbox: status 200") == 2
    assert "Welcome, Alice!" in out
    assert "'other-tenant' received 0 push(es)" in out
    assert "generated a new master key" in proc.stderr


def test_demo_refuses_a_used_state_folder(tmp_path: Path) -> None:
    ok(wasmhost(tmp_path, "demo", "--state", str(tmp_path / "d")))
    one_line_error(wasmhost(tmp_path, "demo", "--state", str(tmp_path / "d")), "already holds")


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    ok(wasmhost(tmp_path, "namespace", "create", "acme", "--outbox"))
    ok(wasmhost(tmp_path, "device", "add", "--namespace", "acme", "--user", "alice", "--provider", "outbox",
                "--token", "tok-phone-SECRET", "--device-id", "phone"))
    ok(wasmhost(tmp_path, "device", "add", "--namespace", "acme", "--user", "alice", "--provider", "outbox",
                "--token", "tok-tablet-SECRET", "--device-id", "tablet"))
    return tmp_path


def test_run_json_result_and_outbox(acme: Path) -> None:
    proc = wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--input", '{"user":"alice","name":"Al"}',
                    "--json")
    result = json.loads(ok(proc))
    assert result["ok"] and result["code"] == 0 and result["error"] is None
    assert result["output"].strip() == "welcomed alice: 2/2 devices"
    assert set(result) >= {"logs", "sends", "fuel_used", "duration_ms"} and result["fuel_used"] > 0
    [send] = result["sends"]
    assert send["devices_succeeded"] == 2 and {r["device_id"] for r in send["results"]} == {"phone", "tablet"}
    deliveries = json.loads(ok(wasmhost(acme, "outbox", "--namespace", "acme", "--json")))
    assert [(d["user"], d["device_id"]) for d in deliveries] == [("alice", "phone"), ("alice", "tablet")]
    assert all(d["message"]["title"] == "Welcome, Al!" and d["time"] > 0 for d in deliveries)
    assert "SECRET" not in proc.stdout


def test_device_list_never_prints_tokens_and_remove(acme: Path) -> None:
    listing = ok(wasmhost(acme, "device", "list", "--namespace", "acme", "--user", "alice"))
    devices = json.loads(ok(wasmhost(acme, "device", "list", "--namespace", "acme", "--user", "alice", "--json")))
    assert "SECRET" not in listing and "SECRET" not in json.dumps(devices)
    assert {d["device_id"] for d in devices} == {"phone", "tablet"}
    phone = next(d for d in devices if d["device_id"] == "phone")
    ok(wasmhost(acme, "device", "remove", "--namespace", "acme", "--id", phone["id"]))
    one_line_error(wasmhost(acme, "device", "remove", "--namespace", "acme", "--id", phone["id"]), "not found")


def test_send_without_a_guest(acme: Path) -> None:
    report = json.loads(ok(wasmhost(acme, "send", "--namespace", "acme", "--user", "alice", "--title", "Hi",
                                    "--body", "there", "--json")))
    assert report["ok"] and report["devices_attempted"] == 2
    text = ok(wasmhost(acme, "send", "--namespace", "acme", "--user", "bob", "--title", "Hi"))
    assert "0/0 devices" in text


def test_sends_list_and_show_what_each_device_got(acme: Path) -> None:
    report = json.loads(ok(wasmhost(acme, "send", "--namespace", "acme", "--user", "alice", "--title", "Hi",
                                    "--json")))
    listed = json.loads(ok(wasmhost(acme, "sends", "list", "--namespace", "acme", "--json")))
    assert [s["send_id"] for s in listed] == [report["send_id"]] and listed[0]["state"] == "completed"
    shown = ok(wasmhost(acme, "sends", "show", report["send_id"], "--namespace", "acme"))
    assert "phone (outbox): delivered, 1 attempt(s)" in shown and "SECRET" not in shown
    one_line_error(wasmhost(acme, "sends", "show", "nope", "--namespace", "acme"), "not found")


def test_run_exit_code_follows_the_guest(acme: Path, tmp_path: Path) -> None:
    wat = tmp_path / "three.wat"
    wat.write_text('(module (memory (export "memory") 1) (func (export "handle") (result i32) i32.const 3))')
    proc = wasmhost(acme, "run", str(wat), "--namespace", "acme", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 3
    loop = tmp_path / "loop.wat"
    loop.write_text('(module (memory (export "memory") 1) (func (export "handle") (result i32) (loop (br 0)) '
                    'i32.const 0))')
    proc = wasmhost(acme, "run", str(loop), "--namespace", "acme", "--fuel", "1000000")
    assert proc.returncode == 1 and "out_of_fuel" in proc.stderr


def test_bad_input_is_one_line_error(acme: Path, tmp_path: Path) -> None:
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "nope"), "unknown namespace")
    one_line_error(wasmhost(acme, "run", str(tmp_path / "missing.wasm"), "--namespace", "acme"), "not found")
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm garbage")
    one_line_error(wasmhost(acme, "run", str(bad), "--namespace", "acme"), "not a valid WebAssembly module")
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--input", "{nope"), "not valid JSON")
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--fuel", "0"), "fuel")
    one_line_error(wasmhost(acme, "device", "add", "--namespace", "acme", "--user", "u", "--provider", "pigeon",
                            "--token", "t"), "unsupported provider")
    one_line_error(wasmhost(acme, "namespace", "create", "acme"), "already exists")
    one_line_error(wasmhost(acme, "namespace", "create", "acme", "--outbox"),
                   "to turn the outbox on: wasmhost credentials set --namespace acme outbox --json '{}'")
    one_line_error(wasmhost(acme, "outbox", "--namespace", "ghost"), "unknown namespace")
    one_line_error(wasmhost(acme, "send", "--namespace", "acme", "--user", "u", "--data", "[1"), "not valid JSON")


def test_not_configured_namespace_is_reported(tmp_path: Path) -> None:
    ok(wasmhost(tmp_path, "namespace", "create", "bare"))
    one_line_error(wasmhost(tmp_path, "send", "--namespace", "bare", "--user", "u", "--title", "x"), "not configured")


def test_keys_generate_and_rotate(acme: Path) -> None:
    new_key = ok(wasmhost(acme, "keys", "generate")).strip()
    assert len(bytes.fromhex(new_key)) == 32
    env_ring = f"1:{KEY},2:{new_key}"
    import os as _os

    def with_ring(*args: str, pin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in _os.environ.items() if not k.startswith("WASMHOST_")}
        env["WASMHOST_DB"] = f"sqlite:///{acme / 'state' / 'wasmhost.db'}"
        env["WASMHOST_MASTER_KEY"] = env_ring
        if pin:
            env["WASMHOST_SEAL_KEY_VERSION"] = pin
        return subprocess.run([sys.executable, "-m", "wasmhost", *args], capture_output=True, text=True,
                              env=env, timeout=120, cwd=acme)

    report = json.loads(ok(with_ring("keys", "rotate", "--json")))
    assert report["complete"] and report["key_version"] == 2 and report["resealed"] >= 3
    again = json.loads(ok(with_ring("keys", "rotate", "--json")))
    assert again["resealed"] == 0 and again["complete"]
    # After rotation the old key can go: a ring with only the new key reads every secret.
    env_ring = f"2:{new_key}"
    devices = json.loads(ok(with_ring("device", "list", "--namespace", "acme", "--user", "alice", "--json")))
    assert len(devices) == 2
    assert json.loads(ok(with_ring("send", "--namespace", "acme", "--user", "alice", "--title", "x", "--json")))["ok"]
    # The old key alone no longer opens anything.
    one_line_error(wasmhost(acme, "send", "--namespace", "acme", "--user", "alice", "--title", "x"),
                   "right master key")


def test_sealing_can_be_pinned_to_an_older_key(acme: Path) -> None:
    import os as _os

    new_key = "ef" * 32
    env = {k: v for k, v in _os.environ.items() if not k.startswith("WASMHOST_")}
    env.update(WASMHOST_DB=f"sqlite:///{acme / 'state' / 'wasmhost.db'}", WASMHOST_MASTER_KEY=f"1:{KEY},2:{new_key}",
               WASMHOST_SEAL_KEY_VERSION="1")
    proc = subprocess.run([sys.executable, "-m", "wasmhost", "device", "add", "--namespace", "acme", "--user", "bob",
                           "--provider", "outbox", "--token", "tok-bob"], capture_output=True, text=True, env=env,
                          timeout=120, cwd=acme)
    assert proc.returncode == 0, proc.stderr
    # Sealed under version 1, so a gateway that knows only the old key still reads it.
    assert json.loads(ok(wasmhost(acme, "send", "--namespace", "acme", "--user", "bob", "--title", "x", "--json")))[
        "devices_succeeded"] == 1


def test_db_is_accepted_after_the_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'other.db'}"
    ok(wasmhost(tmp_path, "namespace", "create", "late", "--db", db))
    assert ok(wasmhost(tmp_path, "--db", db, "namespace", "list")).split() == ["late"]
    assert "late" not in ok(wasmhost(tmp_path, "namespace", "list"))  # WASMHOST_DB untouched
    assert "--db" in ok(wasmhost(tmp_path, "serve", "--help"))


def test_credentials_set_list_remove_validated_and_redacted(tmp_path: Path) -> None:
    ok(wasmhost(tmp_path, "namespace", "create", "shop"))
    doc = {"auth_token": "tk_SECRET_value_1234"}
    one_line_error(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "ntfy", "--json",
                            json.dumps({"base_url": "ftp://x"})), "credential validation failed")
    one_line_error(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "pigeon", "--json", "{}"),
                   "unsupported provider")
    one_line_error(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "outbox"), "--file PATH or --json")
    one_line_error(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "outbox", "--json", "[1]"),
                   "JSON object")
    path = tmp_path / "ntfy.json"
    path.write_text(json.dumps(doc))
    out = ok(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "ntfy", "--file", str(path)))
    assert "configured ntfy for shop" in out and "SECRET" not in out and "has_auth_token" in out
    ok(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "outbox", "--json", "{}"))
    listed = json.loads(ok(wasmhost(tmp_path, "credentials", "list", "--namespace", "shop", "--json")))
    assert sorted(listed["configured"]) == ["ntfy", "outbox"] and "SECRET" not in json.dumps(listed)
    assert "fcm" in listed["supported"]
    ok(wasmhost(tmp_path, "credentials", "remove", "--namespace", "shop", "ntfy"))
    listed = json.loads(ok(wasmhost(tmp_path, "credentials", "list", "--namespace", "shop", "--json")))
    assert list(listed["configured"]) == ["outbox"]


def test_a_device_for_an_unconfigured_provider_is_refused(tmp_path: Path) -> None:
    ok(wasmhost(tmp_path, "namespace", "create", "shop"))
    proc = wasmhost(tmp_path, "device", "add", "--namespace", "shop", "--user", "u", "--provider", "outbox",
                    "--token", "t")
    one_line_error(proc, "'outbox' is not configured for namespace 'shop' (configured: none)")
    assert "wasmhost credentials set --namespace shop outbox" in proc.stderr
    ok(wasmhost(tmp_path, "credentials", "set", "--namespace", "shop", "outbox", "--json", "{}"))
    one_line_error(wasmhost(tmp_path, "device", "add", "--namespace", "shop", "--user", "u", "--provider", "ntfy",
                            "--token", "alerts"), "(configured: outbox)")
    ok(wasmhost(tmp_path, "device", "add", "--namespace", "shop", "--user", "u", "--provider", "outbox",
                "--token", "t"))


def test_not_configured_sends_log_a_host_line_naming_the_cli(tmp_path: Path) -> None:
    ok(wasmhost(tmp_path, "namespace", "create", "bare"))
    proc = wasmhost(tmp_path, "run", str(WELCOME), "--namespace", "bare", "--input", '{"user":"alice"}')
    assert "[host] push_send_to_user: push is not configured" in proc.stderr
    assert "wasmhost credentials set --namespace bare" in proc.stderr


def test_run_applies_the_gateway_limits_and_names_them(acme: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.wasm"
    big.write_bytes(WELCOME.read_bytes())
    env_small = {"WASMHOST_MAX_MODULE_BYTES": str(big.stat().st_size - 1)}
    proc = wasmhost_env(acme, env_small, "run", str(big), "--namespace", "acme")
    one_line_error(proc, "over the gateway's module limit")
    assert "WASMHOST_MAX_MODULE_BYTES" in proc.stderr
    ok(wasmhost_env(acme, {"WASMHOST_MAX_MODULE_BYTES": str(big.stat().st_size)}, "run", str(big),
                    "--namespace", "acme", "--input", '{"user":"alice"}'))
    payload = tmp_path / "in.bin"
    payload.write_bytes(b"x" * (1 << 20 | 1))
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--input-file", str(payload)),
                   "WASMHOST_MAX_INPUT_BYTES")
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--timeout-ms", "60001"),
                   "limits.timeout_ms=60001 exceeds the platform maximum of 60000")
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--max-sends", "1001"),
                   "limits.max_sends=1001 exceeds the platform maximum of 1000")
    hungry = tmp_path / "hungry.wat"
    hungry.write_text('(module (memory (export "memory") 1024) (func (export "handle") (result i32) i32.const 0))')
    one_line_error(wasmhost(acme, "run", str(hungry), "--namespace", "acme"), "memory starts at 64 MiB")


def test_input_help_says_json_and_points_to_input_file(acme: Path) -> None:
    text = " ".join(ok(wasmhost(acme, "run", "--help")).split())
    assert "as JSON" in text and "use --input-file" in text
    one_line_error(wasmhost(acme, "run", str(WELCOME), "--namespace", "acme", "--input", "hello"),
                   "use --input-file")


def wasmhost_env(tmp_path: Path, extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASMHOST_")}
    env.update(WASMHOST_DB=f"sqlite:///{tmp_path / 'state' / 'wasmhost.db'}", WASMHOST_MASTER_KEY=KEY, **extra)
    return subprocess.run([sys.executable, "-m", "wasmhost", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
