"""APNs provider tokens: one ES256 JWT per (team id, key id, key) per process, reused 20–60 minutes.

APNs refuses a token older than an hour (403 ExpiredProviderToken) and one that changes more often than
every 20 minutes (429 TooManyProviderTokenUpdates). So the token is minted on first use, shared by every
connection, every namespace using that key and every dispatcher rebuild, and re-minted on a fixed
schedule or once when APNs says it expired. The cache key includes the key's fingerprint, so a tenant
that claims another's team and key ids with its own key can never be handed the other's token.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..push.credentials import CredentialsError

__all__ = ["APNS_JWT_REUSE", "MAX_CACHED_APNS_TOKENS", "ApnsSigner", "ApnsTokenCache", "load_p8_key"]

#: How long one provider token is used: inside Apple's window (at least 20, at most 60 minutes).
APNS_JWT_REUSE = 40 * 60
#: Distinct (team, key) tokens kept per process; the least recently minted beyond this is dropped.
MAX_CACHED_APNS_TOKENS = 10_000
#: Largest .p8 PEM accepted (a P-256 key is about 240 bytes).
MAX_P8_BYTES = 8 * 1024


def load_p8_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """Parse an APNs .p8 key; it must be an unencrypted EC P-256 private key. Errors never echo the key."""
    if len(pem.encode()) > MAX_P8_BYTES:
        raise CredentialsError(f"p8_key is larger than {MAX_P8_BYTES} bytes")
    if "-----BEGIN" not in pem:
        raise CredentialsError("p8_key must be the PEM text of the .p8 file (-----BEGIN PRIVATE KEY-----)")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsError("p8_key is not a readable unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialsError("p8_key must be an EC P-256 private key (the .p8 file from Apple)")
    return key


@dataclass(frozen=True, slots=True)
class ApnsSigner:
    team_id: str
    key_id: str
    key: ec.EllipticCurvePrivateKey
    fingerprint: str

    @classmethod
    def from_pem(cls, team_id: str, key_id: str, pem: str) -> ApnsSigner:
        key = load_p8_key(pem)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(team_id, key_id, key, hashlib.sha256(public).hexdigest())

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return (self.team_id, self.key_id, self.fingerprint)


class ApnsTokenCache:
    """Process-wide: lives on the APNs spec, which the wiring layer builds once."""

    def __init__(
        self,
        reuse: float = APNS_JWT_REUSE,
        maxsize: int = MAX_CACHED_APNS_TOKENS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 20 * 60 <= reuse <= 60 * 60:
            raise ValueError("APNs tokens must be reused between 20 and 60 minutes")
        self._tokens: TTLCache[tuple[str, str, str], str] = TTLCache(maxsize=maxsize, ttl=reuse, timer=clock)
        self._wall = wall_clock
        self.minted = 0  # tokens signed so far; tests and metrics read it

    def token(self, signer: ApnsSigner) -> str:
        token = self._tokens.get(signer.cache_key)
        if token is None:
            token = jwt.encode(
                {"iss": signer.team_id, "iat": int(self._wall())}, signer.key, algorithm="ES256",
                headers={"kid": signer.key_id},
            )
            self._tokens[signer.cache_key] = token
            self.minted += 1
        return token

    def invalidate(self, signer: ApnsSigner, token: str) -> None:
        """Drop `token` if it is still the current one (APNs said it expired); concurrent callers re-mint once."""
        if self._tokens.get(signer.cache_key) == token:
            del self._tokens[signer.cache_key]
