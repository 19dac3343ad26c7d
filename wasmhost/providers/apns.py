"""APNs, token-based, over HTTP/2: the ``apns`` (alert) and ``apns_voip`` (PushKit) providers.

Both read the same ``apns`` credentials document (``apns_voip`` prefers its own document when one is
saved) and share one provider-token cache, so alert and VoIP sends, every connection and every
dispatcher rebuild use one JWT per key. Each provider instance holds one HTTP/2 connection (our own
asyncio + h2 client, `_h2`, about twice as fast as httpx here) that the factory keeps alive while the
document is unchanged.

Only 410 prunes a device. 400 BadDeviceToken also means "token for the other environment" and
DeviceTokenNotForTopic "token for another bundle id": both are what a tenant's wrong ``environment`` or
``bundle_id`` produces for every device, so they fail permanently with a reason saying what to check.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..push.credentials import CredentialsError
from ..push.message import PushMessage
from ..push.provider import BaseProvider, Delivery, FailureKind, Outcome, ResolvedConfig
from ._breaker import CredentialsBreaker
from ._client import HTTPClient, TransportError
from ._failures import parse_retry_after, transport_failure
from ._fields import check_saved_urls, endpoint_fields, reject_unknown_fields, require_string
from ._h2 import H2Client
from ._jwt import ApnsSigner, ApnsTokenCache, load_p8_key
from ._tls import ALPN_H2_ONLY, TLSContexts

__all__ = [
    "APNS_CONCURRENCY",
    "APNS_TIMEOUT",
    "MAX_ALERT_PAYLOAD",
    "MAX_VOIP_PAYLOAD",
    "VOIP_RING_WINDOW",
    "ApnsProvider",
    "ApnsRequest",
    "ApnsSpec",
    "PayloadRefused",
    "apns_specs",
    "build_request",
    "classify_response",
]

PRODUCTION_URL = "https://api.push.apple.com"
SANDBOX_URL = "https://api.sandbox.push.apple.com"
#: Payload limits Apple enforces (413 PayloadTooLarge); we refuse before sending.
MAX_ALERT_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
MAX_COLLAPSE_ID_BYTES = 64
#: A VoIP push rings a phone: delivered late it is worse than not at all.
VOIP_RING_WINDOW = 30
#: Requests in flight per provider, multiplexed over one connection (the server's
#: SETTINGS_MAX_CONCURRENT_STREAMS lowers it). Enough to hide real RTTs (32 / 20 ms ≈ 1,600 pushes/s per
#: tenant) while one tenant's burst cannot hold the whole connection.
APNS_CONCURRENCY = 32
#: Seconds for one request (connect, write, read).
APNS_TIMEOUT = 10.0
#: Idle seconds before a connection is closed; Apple prefers long-lived connections.
APNS_IDLE_SECONDS = 600.0
#: Bytes of an error body we parse (APNs error bodies are tens of bytes).
MAX_ERROR_BODY = 4096
MIN_TOKEN_HEX, MAX_TOKEN_HEX = 64, 200

_TEAM_OR_KEY = re.compile(r"^[A-Z0-9]{10}$")
_BUNDLE = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_HEX = re.compile(r"^[0-9a-f]+$")
_FIELDS = {"team_id", "key_id", "bundle_id", "p8_key", "environment", "endpoint", "ca_bundle"}

# Reasons that look like a dead token but are what a wrong environment or bundle id gives for every device:
# permanent, never pruned, with a hint for the tenant.
_CONFIG_HINTS = {
    "BadDeviceToken": "the token is malformed or belongs to the other APNs environment; check the credentials'"
                      " environment (sandbox for development builds, production for TestFlight and App Store)",
    "DeviceTokenNotForTopic": "the token belongs to another app; check the credentials' bundle_id",
}
# Reasons that mean the credentials (or their environment) are wrong: surface, and stop sending a while.
_CREDENTIALS = {
    "InvalidProviderToken", "MissingProviderToken", "BadCertificate", "BadCertificateEnvironment", "Forbidden",
    "UnrelatedKeyIdInToken", "BadEnvironmentKeyInToken", "TopicDisallowed", "BadTopic",
}


# -- payload ------------------------------------------------------------------------------------


class PayloadRefused(ValueError):
    """The message cannot be sent as an APNs push; `reason` is the report's reason code."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApnsRequest:
    """Everything but the token and the JWT: the path and authorization are added at send time."""

    headers: dict[str, str]
    body: bytes


def build_request(message: PushMessage, *, bundle_id: str, voip: bool, now: float | None = None) -> ApnsRequest:
    """The APNs headers and JSON payload for `message`, or `PayloadRefused` saying why it cannot be sent.

    Custom data sits beside ``aps`` (its ``aps`` key, if any, is dropped so it cannot clobber ours).
    """
    now = time.time() if now is None else now
    visible = bool(message.title or message.body or message.sound or message.badge is not None)
    if not voip and not (visible or message.content_available):
        raise PayloadRefused(
            "EmptyContent", "an alert push needs a title, body, sound, badge or content_available; Apple drops it"
        )
    aps: dict[str, Any] = {}
    if message.title or message.body:
        alert: dict[str, str] = {}
        if message.title:
            alert["title"] = message.title
        if message.body:
            alert["body"] = message.body
        aps["alert"] = alert
    if message.badge is not None:
        aps["badge"] = message.badge
    if message.sound:
        aps["sound"] = message.sound
    if message.channel:
        aps["thread-id"] = message.channel
    if message.content_available:
        aps["content-available"] = 1
    payload: dict[str, Any] = {k: v for k, v in message.data.items() if k != "aps"}
    payload["aps"] = aps
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    limit = MAX_VOIP_PAYLOAD if voip else MAX_ALERT_PAYLOAD
    if len(body) > limit:
        raise PayloadRefused("PayloadTooLarge", f"payload is {len(body)} bytes; APNs allows {limit}")

    if voip:
        push_type, priority, topic = "voip", "10", bundle_id + ".voip"
    elif visible:
        push_type, priority, topic = "alert", "10", bundle_id
    else:  # content-available only: Apple requires priority 5 for background pushes
        push_type, priority, topic = "background", "5", bundle_id
    headers = {"apns-topic": topic, "apns-push-type": push_type, "apns-priority": priority}
    ttl = message.ttl_seconds
    if voip:
        ttl = VOIP_RING_WINDOW if ttl is None else min(ttl, VOIP_RING_WINDOW)
    if ttl is not None:
        headers["apns-expiration"] = "0" if ttl == 0 else str(int(now) + ttl)
    if message.message_id:
        if len(message.message_id.encode()) > MAX_COLLAPSE_ID_BYTES:
            raise PayloadRefused(
                "BadCollapseId", f"message_id is longer than {MAX_COLLAPSE_ID_BYTES} bytes (apns-collapse-id)"
            )
        if not message.message_id.isprintable() or message.message_id != message.message_id.strip():
            raise PayloadRefused(
                "BadCollapseId", "message_id must be printable, without surrounding spaces (apns-collapse-id)"
            )
    if message.collapse_id:  # the device shows one notification per collapse id: a retried send's once
        headers["apns-collapse-id"] = message.collapse_id
    return ApnsRequest(headers, body)


# -- responses ----------------------------------------------------------------------------------


def classify_response(status: int, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """Turn an APNs answer into an outcome. ExpiredProviderToken comes back as CREDENTIALS; the provider
    re-mints once before it accepts that."""
    if status == 200:
        return Outcome.ok()
    reason, timestamp = "", None
    try:
        doc = json.loads(body[:MAX_ERROR_BODY]) if body else {}
        if isinstance(doc, dict):
            reason = str(doc.get("reason") or "")[:64]
            if isinstance(doc.get("timestamp"), int | float):
                timestamp = float(doc["timestamp"]) / 1000.0  # Apple sends milliseconds
    except (ValueError, UnicodeDecodeError):
        pass
    reason = re.sub(r"[^A-Za-z0-9_.-]", "", reason) or f"HTTP{status}"
    text = f"APNs answered {status} {reason}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if status == 410:  # Unregistered / ExpiredToken: the only answer that prunes (by its timestamp)
        return Outcome.failed(FailureKind.DEAD_TARGET, reason, text, status, dead_since=timestamp)
    if reason in _CONFIG_HINTS:
        return Outcome.failed(FailureKind.PERMANENT, reason, f"{text}: {_CONFIG_HINTS[reason]}", status)
    if status == 403 or reason in _CREDENTIALS:
        return Outcome.failed(FailureKind.CREDENTIALS, reason, text, status)
    if status == 429 or status >= 500 or reason == "IdleTimeout":
        return Outcome.failed(FailureKind.TRANSIENT, reason, text, status, retry_after=retry_after)
    return Outcome.failed(FailureKind.PERMANENT, reason, text, status)


# -- provider -----------------------------------------------------------------------------------


class ApnsProvider(BaseProvider):
    concurrency = APNS_CONCURRENCY

    def __init__(
        self,
        name: str,
        *,
        signer: ApnsSigner,
        tokens: ApnsTokenCache,
        bundle_id: str,
        client: HTTPClient,
        base_url: str,
        breaker: CredentialsBreaker | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.voip = name == "apns_voip"
        self.signer = signer
        self.tokens = tokens
        self.bundle_id = bundle_id
        self.client = client
        self._device_url = base_url.rstrip("/") + "/3/device/"
        self.breaker = breaker or CredentialsBreaker()

    async def send_one(self, delivery: Delivery) -> Outcome:
        refused = self.breaker.check()
        if refused is not None:
            return refused
        if not _HEX.match(delivery.token) or len(delivery.token) > MAX_TOKEN_HEX:
            # The token becomes the URL path; one that was never valid must not shape the request.
            return Outcome.failed(FailureKind.PERMANENT, "BadDeviceToken", "the device token is not an APNs token")
        try:
            request = build_request(delivery.message, bundle_id=self.bundle_id, voip=self.voip)
        except PayloadRefused as exc:
            return Outcome.failed(FailureKind.PERMANENT, exc.reason, str(exc))
        outcome = await self._post(delivery.token, request, retry_expired=True)
        if outcome.kind is FailureKind.CREDENTIALS:
            self.breaker.trip(outcome)
        return outcome

    async def _post(self, device_token: str, request: ApnsRequest, *, retry_expired: bool) -> Outcome:
        jwt_token = self.tokens.token(self.signer)
        headers = [("authorization", f"bearer {jwt_token}"), *request.headers.items()]
        try:
            response = await self.client.request(
                "POST", self._device_url + device_token, headers, request.body, timeout=APNS_TIMEOUT
            )
        except TransportError as exc:
            return transport_failure(exc, device_token, jwt_token)
        outcome = classify_response(response.status, response.body, response.headers)
        if outcome.reason == "ExpiredProviderToken" and retry_expired:
            self.tokens.invalidate(self.signer, jwt_token)
            return await self._post(device_token, request, retry_expired=False)
        return outcome

    async def aclose(self) -> None:
        await self.client.aclose()


# -- spec ---------------------------------------------------------------------------------------


class ApnsSpec:
    """The ``apns`` or ``apns_voip`` spec. Build both with `apns_specs` so they share one token cache."""

    def __init__(
        self,
        *,
        voip: bool = False,
        tokens: ApnsTokenCache | None = None,
        allow_private_endpoints: bool = False,
        breaker_factory: Callable[[], CredentialsBreaker] = CredentialsBreaker,
        tls: TLSContexts | None = None,
    ) -> None:
        self.name = "apns_voip" if voip else "apns"
        self.voip = voip
        self.tokens = tokens or ApnsTokenCache()
        self.allow_private_endpoints = allow_private_endpoints
        self.breaker_factory = breaker_factory
        self.tls = tls or TLSContexts()

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_fields(document, _FIELDS, "apns credentials")  # also refuses a non-object
        team_id = require_string(document, "team_id", max_len=10)
        if not _TEAM_OR_KEY.match(team_id):
            raise CredentialsError("team_id must be the 10-character Team ID (A-Z, 0-9)")
        key_id = require_string(document, "key_id", max_len=10)
        if not _TEAM_OR_KEY.match(key_id):
            raise CredentialsError("key_id must be the 10-character Key ID (A-Z, 0-9)")
        bundle_id = require_string(document, "bundle_id", max_len=155)
        if not _BUNDLE.match(bundle_id):
            raise CredentialsError("bundle_id must be a reverse-DNS bundle id such as com.example.app")
        if bundle_id.endswith(".voip"):
            raise CredentialsError("bundle_id must be the app's bundle id; the .voip topic is derived from it")
        p8 = document.get("p8_key")
        if not isinstance(p8, str) or not p8.strip():
            raise CredentialsError("p8_key is required (the PEM text of the .p8 file)")
        load_p8_key(p8.strip())
        environment = require_string(document, "environment", max_len=16)
        if environment not in ("production", "sandbox"):
            raise CredentialsError('environment must be "production" or "sandbox"')
        out: dict[str, Any] = {
            "team_id": team_id, "key_id": key_id, "bundle_id": bundle_id, "p8_key": p8.strip() + "\n",
            "environment": environment,
        }
        out.update(endpoint_fields(document, allow_private_endpoints=self.allow_private_endpoints))
        return out

    async def check_urls(self, document: Mapping[str, Any]) -> None:
        """Save-time SSRF check (DNS, fail closed) of a tenant's `endpoint`; connect time checks again."""
        await check_saved_urls([("endpoint", document.get("endpoint"))],
                               allow_private_endpoints=self.allow_private_endpoints)

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {k: document[k] for k in ("team_id", "key_id", "bundle_id", "environment")
                               if k in document}
        if document.get("endpoint"):
            out["endpoint"] = document["endpoint"]
        out["has_p8_key"] = bool(document.get("p8_key"))
        out["has_ca_bundle"] = bool(document.get("ca_bundle"))
        return out

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        if not isinstance(token, str):
            raise CredentialsError("token must be a string")
        token = token.strip().lower()
        if not token:
            raise CredentialsError("token is required")
        if not _HEX.match(token):
            raise CredentialsError("an APNs device token must be hexadecimal")
        if len(token) % 2 or not MIN_TOKEN_HEX <= len(token) <= MAX_TOKEN_HEX:
            raise CredentialsError(
                f"an APNs device token must be an even number of hex digits, {MIN_TOKEN_HEX} to {MAX_TOKEN_HEX}"
            )
        return token

    def _source(self, config: ResolvedConfig) -> str | None:
        if self.voip and "apns_voip" in config.credentials:
            return "apns_voip"
        return "apns" if "apns" in config.credentials else None

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        source = self._source(config)
        return config.credentials[source] if source else None

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> ApnsProvider:
        signer = ApnsSigner.from_pem(document["team_id"], document["key_id"], document["p8_key"])
        custom = document.get("endpoint") or ""
        base_url = custom or (SANDBOX_URL if document.get("environment") == "sandbox" else PRODUCTION_URL)
        # Apple's hosts and the operator's own documents are trusted; a tenant's endpoint goes through the guard.
        guarded = bool(custom) and self._source(config) not in config.operator_providers
        client = H2Client(
            base_url, ssl_context=self.tls.get(document.get("ca_bundle") or "", alpn=ALPN_H2_ONLY), guarded=guarded,
            allow_private_endpoints=self.allow_private_endpoints, max_streams=APNS_CONCURRENCY,
            idle_timeout=APNS_IDLE_SECONDS,
        )
        return ApnsProvider(
            self.name, signer=signer, tokens=self.tokens, bundle_id=document["bundle_id"], client=client,
            base_url=base_url, breaker=self.breaker_factory(),
        )


def apns_specs(*, allow_private_endpoints: bool = False, tokens: ApnsTokenCache | None = None,
               tls: TLSContexts | None = None) -> list[ApnsSpec]:
    """The ``apns`` and ``apns_voip`` specs, sharing one process-wide provider-token cache and TLS contexts."""
    shared, tls = tokens or ApnsTokenCache(), tls or TLSContexts()
    return [
        ApnsSpec(tokens=shared, allow_private_endpoints=allow_private_endpoints, tls=tls),
        ApnsSpec(voip=True, tokens=shared, allow_private_endpoints=allow_private_endpoints, tls=tls),
    ]
