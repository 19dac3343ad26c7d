"""Google OAuth2 access tokens for FCM, from a service account: RS256 assertion → token endpoint.

One token per service account per process, cached and refreshed before it expires, with one refresh
in flight at a time (concurrent senders wait for it rather than stampeding the token endpoint). The
cache key includes the key's fingerprint and the token URI, so one tenant can never be handed a token
minted for another tenant's account.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt
from cachetools import LRUCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..push.credentials import CredentialsError
from ..push.provider import FailureKind
from ._client import HTTPClient, TransportError
from ._failures import parse_retry_after, transport_failure

__all__ = [
    "ASSERTION_LIFETIME",
    "FCM_SCOPE",
    "REFRESH_MARGIN",
    "GoogleTokenCache",
    "ServiceAccount",
    "TokenRefused",
    "load_rsa_key",
]

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Lifetime of the signed assertion; Google allows at most one hour.
ASSERTION_LIFETIME = 3600
#: Refresh this many seconds before the access token expires (or at half its life, if that is sooner).
REFRESH_MARGIN = 300.0
#: Service-account tokens kept per process.
MAX_CACHED_ACCESS_TOKENS = 10_000
#: Largest private key PEM accepted (a 4096-bit RSA key is about 3.3 KB).
MAX_KEY_BYTES = 16 * 1024
#: Bytes of a token endpoint answer we read.
MAX_TOKEN_RESPONSE = 64 * 1024
#: Seconds for one token request (connect, write, read).
TOKEN_TIMEOUT = 10.0
_OAUTH_ERROR = re.compile(r"[^A-Za-z0-9_]")


def load_rsa_key(pem: str) -> rsa.RSAPrivateKey:
    """Parse the service account's ``private_key``; errors never echo it."""
    if len(pem.encode()) > MAX_KEY_BYTES:
        raise CredentialsError(f"service_account.private_key is larger than {MAX_KEY_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialsError("service_account.private_key is not a readable unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialsError("service_account.private_key must be an RSA private key")
    if key.key_size < 2048:
        raise CredentialsError("service_account.private_key must be at least 2048 bits")
    return key


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    client_email: str
    private_key_id: str
    token_uri: str
    key: rsa.RSAPrivateKey
    fingerprint: str

    @classmethod
    def from_document(cls, account: Mapping[str, Any]) -> ServiceAccount:
        key = load_rsa_key(account["private_key"])
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(
            account["client_email"], account.get("private_key_id") or "", account["token_uri"], key,
            hashlib.sha256(public).hexdigest(),
        )

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return (self.client_email, self.token_uri, self.fingerprint)

    def assertion(self, now: float) -> str:
        headers = {"kid": self.private_key_id} if self.private_key_id else None
        claims = {
            "iss": self.client_email, "scope": FCM_SCOPE, "aud": self.token_uri,
            "iat": int(now), "exp": int(now) + ASSERTION_LIFETIME,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers=headers)


class TokenRefused(Exception):
    """No access token: `kind` says whether retrying can help. The text never carries a token or a URL."""

    def __init__(self, kind: FailureKind, reason: str, text: str, status: int = 0,
                 retry_after: float | None = None) -> None:
        super().__init__(text)
        self.kind = kind
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float
    expires_at: float


class GoogleTokenCache:
    """Process-wide: lives on the FCM spec. The token endpoint is called through the caller's client
    (which carries the tenant's CA bundle and the SSRF guard)."""

    def __init__(self, maxsize: int = MAX_CACHED_ACCESS_TOKENS, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._tokens: LRUCache[tuple[str, str, str], _Token] = LRUCache(maxsize=maxsize)
        self._inflight: dict[tuple[str, str, str], asyncio.Future[_Token]] = {}
        self._clock = clock
        self._wall = wall_clock
        self.fetches = 0  # token endpoint calls so far; tests and metrics read it

    async def token(self, account: ServiceAccount, client: HTTPClient) -> str:
        key = account.cache_key
        cached = self._tokens.get(key)
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            return cached.value
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fetch(account, client))
            self._inflight[key] = future
            future.add_done_callback(lambda f: self._settle(key, f))
        try:
            return (await asyncio.shield(future)).value
        except TokenRefused:
            if cached is not None and self._clock() < cached.expires_at:
                return cached.value  # the refresh failed but the old token is still good
            raise

    def invalidate(self, account: ServiceAccount, token: str) -> None:
        """Forget `token` if it is still current (FCM said UNAUTHENTICATED); the next caller refreshes."""
        cached = self._tokens.get(account.cache_key)
        if cached is not None and cached.value == token:
            del self._tokens[account.cache_key]

    def _settle(self, key: tuple[str, str, str], future: asyncio.Future[_Token]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if future.cancelled():
            return
        if future.exception() is None:
            self._tokens[key] = future.result()

    async def _fetch(self, account: ServiceAccount, client: HTTPClient) -> _Token:
        self.fetches += 1
        form = urlencode({"grant_type": GRANT_TYPE, "assertion": account.assertion(self._wall())}).encode()
        headers = [("accept", "application/json"), ("content-type", "application/x-www-form-urlencoded")]
        try:
            response = await client.request("POST", account.token_uri, headers, form, timeout=TOKEN_TIMEOUT)
        except TransportError as exc:
            failed = transport_failure(exc)  # a guard refusal or an untrusted certificate is not transient
            raise TokenRefused(failed.kind or FailureKind.TRANSIENT, failed.reason,
                               f"token endpoint: {failed.message}") from None
        body: Any = None
        try:
            body = json.loads(response.body[:MAX_TOKEN_RESPONSE])
        except (ValueError, UnicodeDecodeError):
            body = None
        status = response.status
        if status != 200:
            code = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                code = _OAUTH_ERROR.sub("", body["error"])[:64]
            text = f"the token endpoint refused the service account: {status} {code}".rstrip()
            if status == 429 or status >= 500:
                raise TokenRefused(FailureKind.TRANSIENT, "TokenEndpointUnavailable", text, status,
                                   parse_retry_after(response.headers.get("retry-after")))
            raise TokenRefused(FailureKind.CREDENTIALS, "TokenRefused", text, status)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            raise TokenRefused(FailureKind.TRANSIENT, "TokenEndpointInvalid", "the token endpoint sent no access_token",
                               status)
        expires_in = body.get("expires_in", 3600)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 3600
        now = self._clock()
        margin = min(REFRESH_MARGIN, expires_in / 2)
        return _Token(body["access_token"], now + expires_in - margin, now + expires_in)
