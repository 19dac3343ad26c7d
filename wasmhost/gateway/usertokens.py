"""End-user JWTs: how a namespace's verification settings are checked at save and used per request.

A tenant's own backend issues the tokens; the namespace stores how to verify them (`alg` + key,
optional `issuer`/`audience`). Only the configured algorithm is accepted, so `none`, a different
algorithm and the RS256-key-as-HMAC-secret confusion all fail; `exp` and `sub` are required, and
`exp`/`nbf`/`iat` must be numbers. Without an `audience`, a namespace accepts any token its key
verifies, including one minted for another namespace that trusts the same key.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "ALGORITHMS",
    "NO_AUDIENCE_WARNING",
    "AuthSettingsError",
    "InvalidUserToken",
    "normalize_settings",
    "public_view",
    "verify_user_token",
]

ALGORITHMS = ("HS256", "ES256", "RS256")
#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_HMAC_KEY_BYTES = 32
MIN_RSA_BITS = 2048
MAX_KEY_CHARS = 16 * 1024
MAX_CLAIM_CHARS = 512
#: Longest token we try to decode; real ones are a few hundred bytes.
MAX_TOKEN_BYTES = 8 * 1024
#: Clock skew tolerated on exp/nbf/iat between the tenant's backend and us.
LEEWAY_SECONDS = 30
#: Longest user id (`sub`), as for guests (ABI MAX_USER_ID_BYTES).
MAX_USER_ID_BYTES = 512
#: Claims that must be JSON numbers when present (RFC 7519 NumericDate).
_TIME_CLAIMS = ("exp", "nbf", "iat")
#: What `PUT /v1/namespace/auth` answers (as ``warning``) when no audience is set.
NO_AUDIENCE_WARNING = (
    "no audience is set: every namespace that trusts this same verification key accepts these user tokens"
    " too; set audience and put it in the tokens' aud claim to bind them to this namespace"
)


class AuthSettingsError(ValueError):
    """The settings cannot verify tokens; the text names the problem, never the key."""


class InvalidUserToken(Exception):
    """The token was refused; the text says why (safe to show: no key, no token)."""


def _load_public_key(alg: str, pem: str) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    if "PRIVATE KEY" in pem:
        raise AuthSettingsError("key must be the PUBLIC key (PEM); never send a private key")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise AuthSettingsError(f"key is not a PEM public key usable with {alg}") from None
    if alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise AuthSettingsError("ES256 needs an EC P-256 public key")
        return key
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthSettingsError("RS256 needs an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise AuthSettingsError(f"RS256 keys must be at least {MIN_RSA_BITS} bits (got {key.key_size})")
    return key


@functools.lru_cache(maxsize=1024)
def _verification_key(alg: str, key: str) -> Any:
    if alg == "HS256":
        if len(key.encode()) < MIN_HMAC_KEY_BYTES:
            raise AuthSettingsError(f"HS256 keys must be at least {MIN_HMAC_KEY_BYTES} bytes")
        if "-----BEGIN" in key:
            raise AuthSettingsError("HS256 needs a shared secret, not a PEM key")
        return key.encode()
    return _load_public_key(alg, key)


def _optional_claim(settings: Mapping[str, Any], name: str) -> str | None:
    value = settings.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CLAIM_CHARS:
        raise AuthSettingsError(f"{name} must be a string of at most {MAX_CLAIM_CHARS} characters")
    return value


def normalize_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``{"alg", "key", "issuer"?, "audience"?}``; return the document to store."""
    alg = settings.get("alg")
    if alg not in ALGORITHMS:
        raise AuthSettingsError(f"alg must be one of {', '.join(ALGORITHMS)}")
    key = settings.get("key")
    if not isinstance(key, str) or not key.strip():
        raise AuthSettingsError("key is required")
    if len(key) > MAX_KEY_CHARS:
        raise AuthSettingsError(f"key is longer than {MAX_KEY_CHARS} characters")
    key = key.strip() if alg != "HS256" else key
    _verification_key(alg, key)
    return {
        "alg": alg,
        "key": key,
        "issuer": _optional_claim(settings, "issuer"),
        "audience": _optional_claim(settings, "audience"),
    }


def public_view(namespace: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the tenant may read back: never an HMAC secret (public keys are public)."""
    if not settings:
        return {"namespace": namespace, "configured": False}
    alg = settings.get("alg")
    return {
        "namespace": namespace,
        "configured": True,
        "alg": alg,
        "issuer": settings.get("issuer"),
        "audience": settings.get("audience"),
        "public_key": settings.get("key") if alg != "HS256" else None,
    }


def _check_time_claims(token: str) -> None:
    """Refuse `exp`/`nbf`/`iat` that are not JSON numbers, before PyJWT reads them: it would take
    "9999999999" (a string) or true for a time. Only types are checked here; verification follows."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return  # malformed: verification says why
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidUserToken(f"{name} must be a number (seconds since the epoch)")


def verify_user_token(token: str, settings: Mapping[str, Any]) -> str:
    """The user id (`sub`) of a valid token; `InvalidUserToken` saying why otherwise."""
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise InvalidUserToken(f"token is longer than {MAX_TOKEN_BYTES} bytes")
    alg = str(settings.get("alg"))
    try:
        key = _verification_key(alg, str(settings.get("key", "")))
    except AuthSettingsError:
        raise InvalidUserToken("this namespace's token settings are unusable; the tenant must set them again") from None
    audience = settings.get("audience") or None
    _check_time_claims(token)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            issuer=settings.get("issuer") or None,
            audience=audience,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "sub"], "verify_aud": audience is not None},
        )
    except jwt.InvalidAlgorithmError:
        raise InvalidUserToken(f"token algorithm is not allowed (this namespace accepts {alg} only)") from None
    except jwt.PyJWTError as exc:
        raise InvalidUserToken(str(exc) or type(exc).__name__) from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidUserToken("sub must be a non-empty string")
    if len(sub.encode()) > MAX_USER_ID_BYTES:
        raise InvalidUserToken(f"sub is longer than {MAX_USER_ID_BYTES} bytes")
    return sub
