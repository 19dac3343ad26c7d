"""Secrets at rest: AES-256-GCM under versioned keys derived from a master key.

A sealed value is ``wh1:<key version>:<base64(nonce | ciphertext)>``. The key version in the envelope
lets a rotation (`wasmhost keys rotate`) re-seal rows while gateways keep reading both versions. Each
value is bound to its purpose and row (AAD), so a sealed token copied into another row or column does
not open. Keys come from HKDF-SHA256 per purpose, so one master key never encrypts two kinds of data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import sys
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .private import FILE_MODE, private_dir, private_file

__all__ = ["KeyRing", "SealError", "load_keyring", "parse_keyring"]

_PREFIX = "wh1"
MASTER_KEY_ENV = "WASMHOST_MASTER_KEY"
SEAL_VERSION_ENV = "WASMHOST_SEAL_KEY_VERSION"
KEY_FILE = "master.key"


class SealError(Exception):
    """A sealed value could not be opened (wrong key, tampered, unknown version). Never holds secrets."""


def _decode_key(text: str) -> bytes:
    text = text.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True),
                   lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise ValueError("a master key must be 32 bytes, written as 64 hex characters or base64")


class KeyRing:
    """Master keys by version; seals with the newest, opens with any it holds."""

    def __init__(self, keys: dict[int, bytes], seal_version: int | None = None) -> None:
        """`seal_version` pins which key seals (default: the newest). Pinning the old version while a
        new key is rolled out lets every gateway learn to open the new key before any seals with it."""
        if not keys:
            raise ValueError("a key ring needs at least one master key")
        for version, key in keys.items():
            if version < 1 or len(key) != 32:
                raise ValueError("master key versions start at 1 and keys are 32 bytes")
        if seal_version is not None and seal_version not in keys:
            raise ValueError(f"the sealing key version {seal_version} is not in the key ring {sorted(keys)}")
        self._keys = dict(keys)
        self.current = max(keys) if seal_version is None else seal_version
        self._aead = lru_cache(maxsize=64)(self._make_aead)

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys)

    def derive(self, purpose: str, version: int | None = None) -> bytes:
        """A 32-byte subkey for `purpose`; callers use it for HMACs and cache signatures."""
        master = self._keys[self.current if version is None else version]
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"wasmhost/" + purpose.encode()).derive(master)

    def _make_aead(self, version: int, purpose: str) -> AESGCM:
        return AESGCM(self.derive(purpose, version))

    def seal(self, plaintext: bytes, purpose: str, context: str = "") -> str:
        nonce = os.urandom(12)
        aad = f"{purpose}\x00{context}".encode()
        ct = self._aead(self.current, purpose).encrypt(nonce, plaintext, aad)
        return f"{_PREFIX}:{self.current}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, purpose: str, context: str = "") -> bytes:
        try:
            prefix, version_text, body = sealed.split(":", 2)
            version = int(version_text)
            blob = base64.b64decode(body, validate=True)
        except (ValueError, binascii.Error):
            raise SealError(f"{purpose}: not a sealed value") from None
        if prefix != _PREFIX:
            raise SealError(f"{purpose}: unknown envelope {prefix!r}")
        if version not in self._keys:
            raise SealError(f"{purpose}: sealed under master key version {version}, which this gateway lacks")
        if len(blob) < 12 + 16:
            raise SealError(f"{purpose}: sealed value is truncated")
        aad = f"{purpose}\x00{context}".encode()
        try:
            return self._aead(version, purpose).decrypt(blob[:12], blob[12:], aad)
        except InvalidTag:
            raise SealError(f"{purpose}: sealed value does not open (wrong key or tampered)") from None

    def needs_reseal(self, sealed: str) -> bool:
        return not sealed.startswith(f"{_PREFIX}:{self.current}:")


def fingerprint(key: bytes, *parts: str) -> str:
    """Keyed HMAC-SHA256 of the parts, for equality lookups on sealed values."""
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()


def parse_keyring(text: str, seal_version: int | None = None) -> KeyRing:
    """Parse ``KEY`` (version 1) or ``VERSION:KEY[,VERSION:KEY…]`` or one such entry per line."""
    keys: dict[int, bytes] = {}
    entries = [e.strip() for e in text.replace("\n", ",").split(",") if e.strip() and not e.strip().startswith("#")]
    for entry in entries:
        version_text, sep, key_text = entry.partition(":")
        if sep and version_text.isdigit():
            keys[int(version_text)] = _decode_key(key_text)
        elif len(entries) == 1:
            keys[1] = _decode_key(entry)
        else:
            raise ValueError("with several master keys, write each as VERSION:KEY")
    return KeyRing(keys, seal_version)


def load_keyring(state_dir: Path | None, env: dict[str, str] | None = None) -> KeyRing:
    """The master keys from `WASMHOST_MASTER_KEY`, else `<state_dir>/master.key`, generated on first use."""
    environ = os.environ if env is None else env
    pinned = environ.get(SEAL_VERSION_ENV, "").strip()
    if pinned and not pinned.isdigit():
        raise ValueError(f"{SEAL_VERSION_ENV} must be a key version number")
    seal_version = int(pinned) if pinned else None
    if environ.get(MASTER_KEY_ENV):
        return parse_keyring(environ[MASTER_KEY_ENV], seal_version)
    if state_dir is None:
        raise ValueError(f"set {MASTER_KEY_ENV}: this store has no state folder to keep a generated key in")
    path = state_dir / KEY_FILE
    if path.exists():
        private_file(path)
        return parse_keyring(path.read_text(), seal_version)
    private_dir(state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"1:{os.urandom(32).hex()}\n")
    print(
        f"wasmhost: generated a new master key in {path}; back it up — sealed secrets cannot be read without it"
        f" (or set {MASTER_KEY_ENV})",
        file=sys.stderr,
    )
    return parse_keyring(path.read_text(), seal_version)
