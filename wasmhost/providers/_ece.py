"""RFC 8291 message encryption for Web Push (``aes128gcm``, RFC 8188 framing), on `cryptography` alone.

One record per message, as every push service expects. `encrypt` takes the ephemeral key and salt as
optional arguments only so the RFC 8291 §5 worked example can be reproduced byte for byte.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["HEADER_BYTES", "MAX_PLAINTEXT", "RECORD_SIZE", "b64url_decode", "b64url_encode", "decrypt", "encrypt"]

#: Record size written in the header; it must exceed the one record we send.
RECORD_SIZE = 4096
#: salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid(65)
HEADER_BYTES = 86
#: Push services must accept 4096-byte bodies: 4096 − header − delimiter(1) − tag(16).
MAX_PLAINTEXT = RECORD_SIZE - HEADER_BYTES - 1 - 16


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _keys(secret: bytes, auth: bytes, ua_public: bytes, as_public: bytes, salt: bytes) -> tuple[bytes, bytes]:
    """RFC 8291 §3.3–3.4 then RFC 8188 §2.2: the content key and nonce (HKDF with one-block outputs)."""
    prk_key = _hmac(auth, secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    return cek, nonce


def _raw(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    as_private: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The request body for one push message to the subscription (`p256dh` = `ua_public`, `auth`)."""
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"Web Push payload is {len(plaintext)} bytes; the limit is {MAX_PLAINTEXT}")
    if len(auth_secret) != 16:
        raise ValueError("auth secret must be 16 bytes")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    as_private = as_private or ec.generate_private_key(ec.SECP256R1())
    salt = salt if salt is not None else os.urandom(16)
    as_public = _raw(as_private.public_key())
    cek, nonce = _keys(as_private.exchange(ec.ECDH(), peer), auth_secret, ua_public, as_public, salt)
    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + ciphertext


def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """What the browser does; used by tests and the fake push service (single record only)."""
    salt, (rs, idlen) = body[:16], struct.unpack("!IB", body[16:21])
    as_public = body[21:21 + idlen]
    record = body[21 + idlen:]
    if len(record) > rs:
        raise ValueError("multi-record bodies are not supported")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    ua_public = _raw(ua_private.public_key())
    cek, nonce = _keys(ua_private.exchange(ec.ECDH(), peer), auth_secret, ua_public, as_public, salt)
    padded = AESGCM(cek).decrypt(nonce, record, None)
    content = padded.rstrip(b"\x00")
    if not content.endswith(b"\x02"):
        raise ValueError("the record is not the last record (missing 0x02 delimiter)")
    return content[:-1]
