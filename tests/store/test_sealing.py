from __future__ import annotations

import os
from pathlib import Path

import pytest

from wasmhost.store import KeyRing, SealError, load_keyring, parse_keyring


def test_seal_open_roundtrip_and_context_binding() -> None:
    ring = KeyRing({1: os.urandom(32)})
    sealed = ring.seal(b"secret", "tokens", "acme\x00row1")
    assert sealed.startswith("wh1:1:") and "secret" not in sealed
    assert ring.open(sealed, "tokens", "acme\x00row1") == b"secret"
    with pytest.raises(SealError):
        ring.open(sealed, "tokens", "acme\x00row2")
    with pytest.raises(SealError):
        ring.open(sealed, "credentials", "acme\x00row1")
    assert ring.seal(b"secret", "tokens") != ring.seal(b"secret", "tokens")  # random nonce


@pytest.mark.parametrize("bad", ["", "nope", "wh1:1:!!!", "wh1:x:AAAA", "wh9:1:AAAA", "wh1:1:AAAA"])
def test_malformed_envelopes_are_clear_errors(bad: str) -> None:
    with pytest.raises(SealError):
        KeyRing({1: os.urandom(32)}).open(bad, "tokens")


def test_tampering_detected() -> None:
    ring = KeyRing({1: os.urandom(32)})
    sealed = ring.seal(b"secret", "p")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError, match="does not open"):
        ring.open(flipped, "p")


def test_rotation_reads_old_and_seals_new() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    old = KeyRing({1: k1}).seal(b"v", "p")
    ring = KeyRing({1: k1, 2: k2})
    assert ring.open(old, "p") == b"v" and ring.needs_reseal(old)
    new = ring.seal(b"v", "p")
    assert new.startswith("wh1:2:") and not ring.needs_reseal(new)
    with pytest.raises(SealError, match="version 2"):
        KeyRing({1: k1}).open(new, "p")


def test_parse_keyring_forms() -> None:
    key = os.urandom(32)
    assert parse_keyring(key.hex()).versions == [1]
    import base64

    assert parse_keyring(base64.b64encode(key).decode()).versions == [1]
    ring = parse_keyring(f"1:{key.hex()},3:{os.urandom(32).hex()}")
    assert ring.versions == [1, 3] and ring.current == 3
    for bad in ("short", f"{key.hex()},{key.hex()}", "1:abcd"):
        with pytest.raises(ValueError):
            parse_keyring(bad)


def test_load_keyring_env_then_generated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = os.urandom(32).hex()
    assert load_keyring(tmp_path, {"WASMHOST_MASTER_KEY": key}).versions == [1]
    assert not (tmp_path / "master.key").exists()
    ring = load_keyring(tmp_path, {})
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600
    assert "generated a new master key" in capsys.readouterr().err
    again = load_keyring(tmp_path, {})
    assert again.derive("x") == ring.derive("x")
    with pytest.raises(ValueError, match="WASMHOST_MASTER_KEY"):
        load_keyring(None, {})
