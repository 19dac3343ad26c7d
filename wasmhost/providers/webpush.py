"""Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID).

The device token is the browser's subscription JSON. Its endpoint is end-user supplied, so it passes
the SSRF guard at registration and again at connect time. The VAPID JWT is cached per push-service
origin until shortly before it expires (pywebpush re-signs on every call).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..push.credentials import CredentialsError
from ..push.message import PushMessage
from ..push.provider import BaseProvider, Delivery, FailureKind, Outcome, ResolvedConfig
from ..push.urlguard import UnsafeURL, check_url, check_url_syntax
from ._breaker import CredentialsBreaker
from ._client import HTTPClient, TransportError
from ._ece import MAX_PLAINTEXT, b64url_decode, b64url_encode, encrypt
from ._failures import parse_retry_after, transport_failure
from ._fields import MAX_SECRET_BYTES, check_ca_bundle, reject_unknown_fields, require_string
from ._pool import PoolClient
from ._tls import TLSContexts
from ._topic import topic_for

__all__ = [
    "DEFAULT_TTL",
    "VAPID_LIFETIME",
    "Subscription",
    "VapidSigner",
    "WebPushProvider",
    "WebPushSpec",
    "topic_for",
]

#: TTL sent when the message has none: a day, instead of pywebpush's "drop if offline" (0).
DEFAULT_TTL = 24 * 3600
#: VAPID JWT lifetime (RFC 8292 caps it at 24 h) and how long before expiry a new one is minted.
VAPID_LIFETIME = 12 * 3600
VAPID_REFRESH_MARGIN = 3600
WEBPUSH_TIMEOUT = 10.0
WEBPUSH_CONCURRENCY = 64
#: Connections kept per push-service origin, and origins kept open (browsers use a handful of services).
LANES_PER_ORIGIN = 64
MAX_ORIGINS = 32
MAX_SUBSCRIPTION_BYTES = 4096

_FIELDS = {"vapid_private_key", "vapid_subject", "ca_bundle"}
#: A raw P-256 private scalar: 32 bytes in unpadded (or once-padded) base64url.
_RAW_VAPID_KEY = re.compile(r"[A-Za-z0-9_-]{43}=?")


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: bytes
    auth: bytes

    @classmethod
    def parse(cls, token: str) -> Subscription:
        """Raise `CredentialsError` naming the field; the text never quotes the endpoint or keys."""
        if len(token.encode()) > MAX_SUBSCRIPTION_BYTES:
            raise CredentialsError(f"the subscription is longer than {MAX_SUBSCRIPTION_BYTES} bytes")
        try:
            doc = json.loads(token)
        except ValueError:
            raise CredentialsError("a webpush token must be the browser's subscription JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
            raise CredentialsError('the subscription must be {"endpoint", "keys": {"p256dh", "auth"}}')
        endpoint, keys = doc.get("endpoint"), doc["keys"]
        if not isinstance(endpoint, str) or not endpoint:
            raise CredentialsError("subscription endpoint is required")
        try:
            p256dh = b64url_decode(str(keys.get("p256dh", "")))
            auth = b64url_decode(str(keys.get("auth", "")))
        except ValueError:
            raise CredentialsError("subscription keys must be base64url") from None
        if len(p256dh) != 65 or p256dh[0] != 4:
            raise CredentialsError("subscription keys.p256dh must be an uncompressed P-256 point (65 bytes)")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
        except ValueError:
            raise CredentialsError("subscription keys.p256dh is not a point on P-256") from None
        if len(auth) != 16:
            raise CredentialsError("subscription keys.auth must be 16 bytes")
        return cls(endpoint, p256dh, auth)

    def to_token(self) -> str:
        keys = {"p256dh": b64url_encode(self.p256dh), "auth": b64url_encode(self.auth)}
        return json.dumps({"endpoint": self.endpoint, "keys": keys}, separators=(",", ":"))


def build_payload(message: PushMessage) -> bytes:
    """The plaintext the service worker receives: the message's fields as JSON."""
    doc = message.to_dict()
    doc.pop("target_provider", None)
    doc.pop("exclude_provider", None)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """PEM (PKCS#8 or SEC1), or the raw 32-byte base64url form web-push tools print (exactly 43
    base64url characters: any other text must not quietly become some scalar)."""
    value = value.strip()
    try:
        if "BEGIN" in value:
            key = serialization.load_pem_private_key(value.encode(), password=None)
        else:
            if not _RAW_VAPID_KEY.fullmatch(value):
                raise ValueError("not 32 bytes of base64url")
            key = ec.derive_private_key(int.from_bytes(b64url_decode(value), "big"), ec.SECP256R1())
    except (ValueError, TypeError):
        raise CredentialsError("vapid_private_key must be an EC P-256 private key (PEM or raw base64url)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CredentialsError("vapid_private_key must be an EC P-256 (prime256v1) key")
    return key


class VapidSigner:
    """Signs RFC 8292 JWTs and caches one per audience (push-service origin) until near expiry."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str) -> None:
        self.key = key
        self.subject = subject
        self.public_key = b64url_encode(key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        self._cache: dict[str, tuple[str, float]] = {}
        self.minted = 0

    def authorization(self, audience: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cached = self._cache.get(audience)
        if cached is None or cached[1] - now < VAPID_REFRESH_MARGIN:
            exp = int(now) + VAPID_LIFETIME
            token = jwt.encode({"aud": audience, "exp": exp, "sub": self.subject}, self.key, algorithm="ES256",
                               headers={"typ": "JWT"})
            cached = (f"vapid t={token}, k={self.public_key}", float(exp))
            self._cache[audience] = cached
            self.minted += 1
        return cached[0]


def classify(status: int, retry_after: str | None) -> Outcome:
    reason = f"HTTP {status}"
    if status in (404, 410):
        return Outcome.failed(FailureKind.DEAD_TARGET, "SubscriptionGone", "the subscription expired or was "
                              "unsubscribed", status)
    if status == 401:
        return Outcome.failed(FailureKind.CREDENTIALS, "VapidRejected", "the push service refused the VAPID "
                              "signature", status)
    if status == 403:
        return Outcome.failed(FailureKind.CREDENTIALS, "VapidKeyMismatch", "the subscription was made with "
                              "another VAPID key (applicationServerKey)", status)
    if status == 413:
        return Outcome.failed(FailureKind.PERMANENT, "PayloadTooLarge", "the push service refused the size", status)
    if status == 429 or status >= 500:
        return Outcome.failed(FailureKind.TRANSIENT, reason, "", status, retry_after=parse_retry_after(retry_after))
    return Outcome.failed(FailureKind.PERMANENT, reason, "", status)


async def _close_when_idle(client: HTTPClient) -> None:
    """Close an evicted origin's client once the sends still using it are done."""
    while getattr(client, "busy", 0):
        await asyncio.sleep(0.05)
    await client.aclose()


class WebPushProvider(BaseProvider):
    name = "webpush"
    concurrency = WEBPUSH_CONCURRENCY

    def __init__(
        self,
        signer: VapidSigner,
        *,
        allow_private_endpoints: bool = False,
        ca_bundle: str = "",
        timeout: float = WEBPUSH_TIMEOUT,
        tls: TLSContexts | None = None,
        client_factory: Callable[[str], HTTPClient] | None = None,
    ) -> None:
        super().__init__()
        self.tls = tls or TLSContexts()
        #: Builds the client for one push-service origin (unit tests pass in-memory ones).
        self.client_factory = client_factory or self._new_client
        self.signer = signer
        self.allow_private_endpoints = allow_private_endpoints
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        # Endpoints are end-user URLs: always guarded, whatever the credentials' origin. One lane client
        # per push-service origin, so connections to one service are not evicted by another's.
        self._clients: OrderedDict[str, HTTPClient] = OrderedDict()
        self._closing: set[asyncio.Future[None]] = set()
        # 401 means our VAPID signature is refused by that push service: stop sending there for a while.
        # 403 is per subscription (subscribed with another key) and must not block the others.
        self.breaker = CredentialsBreaker()

    async def send_one(self, delivery: Delivery) -> Outcome:
        try:
            sub = Subscription.parse(delivery.token)
            url = check_url_syntax(sub.endpoint, allow_private_endpoints=self.allow_private_endpoints)
        except CredentialsError as exc:
            return Outcome.failed(FailureKind.PERMANENT, "InvalidToken", str(exc))
        except UnsafeURL as exc:
            return Outcome.failed(FailureKind.PERMANENT, "BlockedURL", str(exc))
        audience = f"{url.scheme}://{url.netloc.decode('ascii')}"
        blocked = self.breaker.check(audience)
        if blocked is not None:
            return blocked
        plaintext = build_payload(delivery.message)
        if len(plaintext) > MAX_PLAINTEXT:
            return Outcome.failed(FailureKind.PERMANENT, "MessageTooBig",
                                  f"the Web Push payload is {len(plaintext)} bytes; the limit is {MAX_PLAINTEXT}")
        message = delivery.message
        headers = [
            ("Authorization", self.signer.authorization(audience)),
            ("Content-Encoding", "aes128gcm"),
            ("Content-Type", "application/octet-stream"),
            ("TTL", str(message.ttl_seconds if message.ttl_seconds is not None else DEFAULT_TTL)),
            ("Urgency", "high" if message.priority == "high" else "normal"),
        ]
        if message.collapse_id:  # replaces a copy still queued at the push service (a retried send's)
            headers.append(("Topic", topic_for(message.collapse_id)))
        body = encrypt(plaintext, sub.p256dh, sub.auth)
        try:
            response = await self._client_for(audience).request("POST", str(url), headers, body, timeout=self.timeout)
        except TransportError as exc:
            return transport_failure(exc, delivery.token)
        if response.status <= 202:
            return Outcome.ok(response.status)
        outcome = classify(response.status, response.headers.get("retry-after"))
        if response.status == 401:
            self.breaker.trip(outcome, audience)
        return outcome

    def _new_client(self, origin: str) -> HTTPClient:
        return PoolClient(ssl_context=self.tls.get(self.ca_bundle), guarded=True,
                          allow_private_endpoints=self.allow_private_endpoints, lanes=LANES_PER_ORIGIN)

    def _client_for(self, origin: str) -> HTTPClient:
        client = self._clients.get(origin)
        if client is None:
            client = self.client_factory(origin)
            self._clients[origin] = client
            if len(self._clients) > MAX_ORIGINS:
                _, oldest = self._clients.popitem(last=False)
                closing = asyncio.ensure_future(_close_when_idle(oldest))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        else:
            self._clients.move_to_end(origin)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class WebPushSpec:
    """Credentials: ``vapid_private_key`` (PEM EC P-256 or raw base64url), ``vapid_subject``
    (``mailto:`` or ``https:``), optional ``ca_bundle`` for push services behind a private CA."""

    name = "webpush"

    def __init__(self, *, allow_private_endpoints: bool = False, timeout: float = WEBPUSH_TIMEOUT,
                 tls: TLSContexts | None = None) -> None:
        self.allow_private_endpoints = allow_private_endpoints
        self.tls = tls or TLSContexts()
        self.timeout = timeout

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_fields(document, _FIELDS, "webpush credentials")
        raw_key = require_string(document, "vapid_private_key", max_len=MAX_SECRET_BYTES, required=False)
        if not raw_key:
            raise CredentialsError("vapid_private_key is required")
        key = load_vapid_key(raw_key)
        subject = require_string(document, "vapid_subject", max_len=MAX_SECRET_BYTES, required=False)
        if not (subject.startswith("mailto:") and "@" in subject) and not subject.startswith("https://"):
            raise CredentialsError("vapid_subject must be a mailto: address or an https: URL")
        if len(subject) > 512:
            raise CredentialsError("vapid_subject must be at most 512 characters")
        out: dict[str, Any] = {
            "vapid_private_key": key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
            "vapid_subject": subject,
        }
        ca_bundle = check_ca_bundle(document)
        if ca_bundle:
            out["ca_bundle"] = ca_bundle
        return out

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """The public key is shown: it is what the browser needs as ``applicationServerKey``."""
        out: dict[str, Any] = {"vapid_subject": document.get("vapid_subject", ""),
                               "has_vapid_private_key": bool(document.get("vapid_private_key")),
                               "has_ca_bundle": bool(document.get("ca_bundle"))}
        try:
            key = load_vapid_key(str(document.get("vapid_private_key", "")))
            out["vapid_public_key"] = VapidSigner(key, "").public_key
        except CredentialsError:
            pass
        return out

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        sub = Subscription.parse(token.strip())
        try:
            url = check_url_syntax(sub.endpoint, allow_private_endpoints=self.allow_private_endpoints)
        except UnsafeURL as exc:
            raise CredentialsError(f"subscription endpoint rejected: {exc}") from None
        if url.scheme != "https" and not self.allow_private_endpoints:
            raise CredentialsError("subscription endpoint must be https")
        return sub.to_token()

    async def check_token_urls(self, token: str) -> None:
        """Registration-time SSRF check: the endpoint's host must resolve to public addresses only."""
        try:
            await check_url(Subscription.parse(token).endpoint, allow_private_endpoints=self.allow_private_endpoints)
        except UnsafeURL as exc:
            raise CredentialsError(f"subscription endpoint rejected: {exc}") from None

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        return config.credentials.get(self.name)

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> WebPushProvider:
        signer = VapidSigner(load_vapid_key(str(document["vapid_private_key"])), str(document["vapid_subject"]))
        return WebPushProvider(signer, allow_private_endpoints=self.allow_private_endpoints,
                               ca_bundle=str(document.get("ca_bundle", "")),
                               timeout=self.timeout)
