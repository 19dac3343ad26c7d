"""FCM HTTP v1: one request per message, OAuth2 from the tenant's service account, over HTTP/2.

The access token is cached per service account on the spec (process-wide), so dispatcher rebuilds and
every namespace sharing an account reuse it. Each provider instance holds one HTTP/2 client that the
factory keeps alive while the document is unchanged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from ..push.credentials import CredentialsError
from ..push.message import PushMessage
from ..push.provider import BaseProvider, Delivery, FailureKind, Outcome, ResolvedConfig
from ._breaker import CredentialsBreaker
from ._client import HTTPClient, TransportError
from ._failures import parse_retry_after, transport_failure
from ._fields import check_saved_urls, check_tenant_url, endpoint_fields, reject_unknown_fields, require_string
from ._jwt_oauth import GoogleTokenCache, ServiceAccount, TokenRefused, load_rsa_key
from ._pool import PoolClient
from ._tls import ALPN_H2, TLSContexts
from ._topic import topic_for

__all__ = [
    "FCM_CONCURRENCY",
    "FCM_TIMEOUT",
    "MAX_FCM_PAYLOAD",
    "MAX_FCM_TOKEN",
    "FcmProvider",
    "FcmSpec",
    "MessageRefused",
    "build_message",
    "classify_response",
]

FCM_URL = "https://fcm.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
#: FCM's limit on a message's notification + data payload; we refuse before sending.
MAX_FCM_PAYLOAD = 4096
#: Longest registration token accepted (FCM tokens are about 160–200 characters today).
MAX_FCM_TOKEN = 4096
#: Requests in flight per provider (see `apns.APNS_CONCURRENCY` for why not more).
FCM_CONCURRENCY = 32
FCM_MAX_CONNECTIONS = 4
FCM_TIMEOUT = 10.0
FCM_IDLE_SECONDS = 300.0
#: Bytes of an error body we parse.
MAX_ERROR_BODY = 16 * 1024

_FIELDS = {"service_account", "endpoint", "ca_bundle"}
_ACCOUNT_FIELDS = {
    "type", "project_id", "private_key_id", "private_key", "client_email", "client_id", "auth_uri", "token_uri",
    "auth_provider_x509_cert_url", "client_x509_cert_url", "universe_domain",
}
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9.:-]{0,99}$")
_EMAIL = re.compile(r"^[^@\s]{1,200}@[^@\s]{1,200}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_RESERVED_DATA = ("from", "gcm", "message_type", "collapse_key")
_CODE = re.compile(r"[^A-Z0-9_]")


class MessageRefused(ValueError):
    """The message cannot be sent through FCM; `reason` is the report's reason code."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


# -- message ------------------------------------------------------------------------------------


def _data_strings(data: Mapping[str, Any]) -> dict[str, str]:
    """FCM's ``data`` is a string map: strings pass, anything else is sent as its JSON text."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if key in _RESERVED_DATA or key.startswith(("google.", "gcm.")):
            raise MessageRefused("InvalidData", f"data key {key!r} is reserved by FCM")
        out[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return out


def build_message(token: str, message: PushMessage) -> dict[str, Any]:
    """The ``{"message": …}`` body for one device, with android/apns/webpush overrides where they apply."""
    notification = {k: v for k, v in (("title", message.title), ("body", message.body)) if v}
    data = _data_strings(message.data)
    size = len(json.dumps({"notification": notification, "data": data}, separators=(",", ":"),
                          ensure_ascii=False).encode())
    if size > MAX_FCM_PAYLOAD:
        raise MessageRefused("PayloadTooLarge", f"payload is {size} bytes; FCM allows {MAX_FCM_PAYLOAD}")
    high = message.priority == "high"
    out: dict[str, Any] = {"token": token}
    if notification:
        out["notification"] = notification
    if data:
        out["data"] = data

    android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL"}
    if message.ttl_seconds is not None:
        android["ttl"] = f"{message.ttl_seconds}s"
    if message.message_id:
        android["collapse_key"] = message.message_id
    android_note = {k: v for k, v in (("channel_id", message.channel), ("sound", message.sound)) if v}
    if notification and message.collapse_id:
        # Notification messages ignore collapse_key; the tag replaces a shown notification with the same
        # one on the device. A derived send key is not made a collapse_key: FCM keeps at most four collapse
        # keys per device while it is offline, so one per send could drop other sends.
        android_note["tag"] = message.collapse_id
    if android_note:
        android["notification"] = android_note
    out["android"] = android

    aps: dict[str, Any] = {}
    if message.badge is not None:
        aps["badge"] = message.badge
    if message.sound:
        aps["sound"] = message.sound
    if message.channel:
        aps["thread-id"] = message.channel
    if message.content_available:
        aps["content-available"] = 1
    background = message.content_available and not (notification or message.sound or message.badge is not None)
    apns_headers = {"apns-priority": "5" if background or not high else "10"}
    if background:
        apns_headers["apns-push-type"] = "background"
    if message.ttl_seconds is not None:
        apns_headers["apns-expiration"] = "0" if message.ttl_seconds == 0 else str(int(time.time()) +
                                                                                  message.ttl_seconds)
    if message.collapse_id:
        apns_headers["apns-collapse-id"] = message.collapse_id
    apns: dict[str, Any] = {"headers": apns_headers}
    if aps:
        apns["payload"] = {"aps": aps}
    out["apns"] = apns

    webpush_headers = {"Urgency": "high" if high else "normal"}
    if message.ttl_seconds is not None:
        webpush_headers["TTL"] = str(message.ttl_seconds)
    if message.collapse_id:
        webpush_headers["Topic"] = topic_for(message.collapse_id)
    out["webpush"] = {"headers": webpush_headers}
    return {"message": out}


# -- responses ----------------------------------------------------------------------------------


def _error_code(body: bytes) -> tuple[str, str]:
    """(errorCode or status, message) from a ``google.rpc.Status`` body."""
    try:
        doc = json.loads(body[:MAX_ERROR_BODY])
    except (ValueError, UnicodeDecodeError):
        return "", ""
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code = ""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("FcmError") and detail.get("errorCode"):
            code = str(detail["errorCode"])
            break
    code = code or str(error.get("status") or "")
    return _CODE.sub("", code)[:64], str(error.get("message") or "")


def classify_response(status: int, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """Turn an FCM answer into an outcome (UNAUTHENTICATED comes back as CREDENTIALS; the provider
    refreshes its token once before it accepts that)."""
    if status == 200:
        return Outcome.ok()
    code, detail = _error_code(body)
    code = code or f"HTTP{status}"
    text = f"FCM answered {status} {code}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    if code in ("UNREGISTERED", "SENDER_ID_MISMATCH") or (status == 404 and code == "NOT_FOUND"):
        return Outcome.failed(FailureKind.DEAD_TARGET, code, text, status)
    if code == "INVALID_ARGUMENT" and "registration token" in detail.lower():
        return Outcome.failed(FailureKind.DEAD_TARGET, "InvalidRegistration", text, status)
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "THIRD_PARTY_AUTH_ERROR") or status in (401, 403):
        return Outcome.failed(FailureKind.CREDENTIALS, code, text, status)
    if code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL") or status == 429 or status >= 500:
        return Outcome.failed(FailureKind.TRANSIENT, code, text, status, retry_after=retry_after)
    return Outcome.failed(FailureKind.PERMANENT, code, text, status)


# -- provider -----------------------------------------------------------------------------------


class FcmProvider(BaseProvider):
    name = "fcm"
    concurrency = FCM_CONCURRENCY

    def __init__(
        self,
        *,
        account: ServiceAccount,
        project_id: str,
        tokens: GoogleTokenCache,
        client: HTTPClient,
        base_url: str = "",
        breaker: CredentialsBreaker | None = None,
    ) -> None:
        super().__init__()
        self.account = account
        self.url = f"{(base_url or FCM_URL).rstrip('/')}/v1/projects/{quote(project_id, safe='')}/messages:send"
        self.tokens = tokens
        self.client = client
        self.breaker = breaker or CredentialsBreaker()

    async def send_one(self, delivery: Delivery) -> Outcome:
        refused = self.breaker.check()
        if refused is not None:
            return refused
        try:
            body = json.dumps(build_message(delivery.token, delivery.message), separators=(",", ":"),
                              ensure_ascii=False).encode()
        except MessageRefused as exc:
            return Outcome.failed(FailureKind.PERMANENT, exc.reason, str(exc))
        outcome = await self._post(delivery.token, body, refresh_once=True)
        # THIRD_PARTY_AUTH_ERROR is Firebase's APNs/web-push setup, broken for some devices only: no breaker.
        if outcome.kind is FailureKind.CREDENTIALS and outcome.reason != "THIRD_PARTY_AUTH_ERROR":
            self.breaker.trip(outcome)
        return outcome

    async def _post(self, device_token: str, body: bytes, *, refresh_once: bool) -> Outcome:
        try:
            access = await self.tokens.token(self.account, self.client)
        except TokenRefused as exc:
            return Outcome.failed(exc.kind, exc.reason, str(exc), exc.status, retry_after=exc.retry_after)
        headers = [("authorization", f"Bearer {access}"), ("content-type", "application/json")]
        try:
            response = await self.client.request("POST", self.url, headers, body, timeout=FCM_TIMEOUT)
        except TransportError as exc:
            return transport_failure(exc, device_token, access)
        outcome = classify_response(response.status, response.body, response.headers)
        if refresh_once and outcome.reason == "UNAUTHENTICATED":
            self.tokens.invalidate(self.account, access)
            return await self._post(device_token, body, refresh_once=False)
        return outcome

    async def aclose(self) -> None:
        await self.client.aclose()


# -- spec ---------------------------------------------------------------------------------------


class FcmSpec:
    name = "fcm"

    def __init__(
        self,
        *,
        tokens: GoogleTokenCache | None = None,
        allow_private_endpoints: bool = False,
        breaker_factory: Callable[[], CredentialsBreaker] = CredentialsBreaker,
        tls: TLSContexts | None = None,
    ) -> None:
        self.tokens = tokens or GoogleTokenCache()
        self.allow_private_endpoints = allow_private_endpoints
        self.tls = tls or TLSContexts()
        self.breaker_factory = breaker_factory

    def _account(self, raw: Any) -> dict[str, Any]:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise CredentialsError("service_account must be the JSON object Google issues") from None
        if not isinstance(raw, Mapping):
            raise CredentialsError("service_account is required (the JSON object Google issues)")
        reject_unknown_fields(raw, _ACCOUNT_FIELDS, "service_account")
        if raw.get("type", "service_account") != "service_account":
            raise CredentialsError('service_account.type must be "service_account"')
        project_id = require_string(raw, "project_id", max_len=100)
        if not _PROJECT.match(project_id):
            raise CredentialsError("service_account.project_id is not a valid Firebase project id")
        email = require_string(raw, "client_email", max_len=320)
        if not _EMAIL.match(email):
            raise CredentialsError("service_account.client_email must be the service account's e-mail address")
        key_id = require_string(raw, "private_key_id", max_len=128, required=False)
        if key_id and not _PRINTABLE.match(key_id):
            raise CredentialsError("service_account.private_key_id must be printable ASCII")
        pem = raw.get("private_key")
        if not isinstance(pem, str) or not pem.strip():
            raise CredentialsError("service_account.private_key is required")
        load_rsa_key(pem)
        token_uri = require_string(raw, "token_uri", max_len=2048, required=False) or GOOGLE_TOKEN_URI
        token_uri = check_tenant_url(token_uri, "service_account.token_uri",
                                     allow_private_endpoints=self.allow_private_endpoints, base=False)
        account = {"type": "service_account", "project_id": project_id, "client_email": email,
                   "private_key": pem, "token_uri": token_uri}
        if key_id:
            account["private_key_id"] = key_id
        return account

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_fields(document, _FIELDS, "fcm credentials")  # also refuses a non-object
        out: dict[str, Any] = {"service_account": self._account(document.get("service_account"))}
        out.update(endpoint_fields(document, allow_private_endpoints=self.allow_private_endpoints))
        return out

    async def check_urls(self, document: Mapping[str, Any]) -> None:
        """Save-time SSRF check (with DNS, fail closed) of the tenant's `endpoint` and `token_uri`."""
        account = document.get("service_account") or {}
        await check_saved_urls([("endpoint", document.get("endpoint")),
                                ("service_account.token_uri", account.get("token_uri"))],
                               allow_private_endpoints=self.allow_private_endpoints)

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        account = document.get("service_account") or {}
        shown = {k: account[k] for k in ("project_id", "client_email", "private_key_id", "token_uri") if k in account}
        out: dict[str, Any] = {"service_account": {**shown, "has_private_key": bool(account.get("private_key"))}}
        if document.get("endpoint"):
            out["endpoint"] = document["endpoint"]
        out["has_ca_bundle"] = bool(document.get("ca_bundle"))
        return out

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        if not isinstance(token, str):
            raise CredentialsError("token must be a string")
        token = token.strip()
        if not token:
            raise CredentialsError("token is required")
        if len(token) > MAX_FCM_TOKEN:
            raise CredentialsError(f"an FCM registration token is at most {MAX_FCM_TOKEN} characters")
        if not _PRINTABLE.match(token):
            raise CredentialsError("an FCM registration token must be printable ASCII without spaces")
        return token

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        return config.credentials.get(self.name)

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> FcmProvider:
        account_doc = document["service_account"]
        account = ServiceAccount.from_document(account_doc)
        custom = document.get("endpoint") or ""
        # The token URI and endpoint come from the tenant unless the operator supplied the document.
        guarded = self.name not in config.operator_providers
        client = PoolClient(
            ssl_context=self.tls.get(document.get("ca_bundle") or "", alpn=ALPN_H2), guarded=guarded,
            allow_private_endpoints=self.allow_private_endpoints, connections=FCM_MAX_CONNECTIONS, http2=True,
            keepalive_expiry=FCM_IDLE_SECONDS,
        )
        return FcmProvider(account=account, project_id=account_doc["project_id"], tokens=self.tokens, client=client,
                           base_url=custom or FCM_URL, breaker=self.breaker_factory())
