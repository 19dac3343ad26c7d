"""ntfy: publish to the tenant's or the operator's ntfy server.

Topics are published as JSON to the server root, so non-ASCII titles and tags travel as UTF-8 JSON and
are never mangled by header encoding (ntfy #608/#977). A UnifiedPush endpoint token is POSTed to its own
path with the message JSON as body, and only when it lives on the configured server's scheme and host.
Tenant base URLs pass the SSRF guard at save and at connect time; the operator's default is trusted
(it may be on loopback).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

import httpx

from ..push.credentials import CredentialsError
from ..push.message import PushMessage
from ..push.provider import BaseProvider, Delivery, FailureKind, Outcome, ResolvedConfig
from ..push.urlguard import UnsafeURL, check_url_syntax
from ._breaker import CredentialsBreaker
from ._client import HTTPClient, TransportError
from ._failures import parse_retry_after, transport_failure
from ._fields import (
    MAX_SECRET_BYTES,
    check_ca_bundle,
    check_saved_urls,
    reject_unknown_fields,
    require_string,
    url_field,
    validate_secret,
)
from ._pool import PoolClient
from ._tls import TLSContexts

__all__ = ["MAX_MESSAGE_BYTES", "NTFY_TIMEOUT", "NtfyProvider", "NtfySpec", "NtfyTarget"]

#: ntfy's default message-size-limit: a longer body is stored as an attachment (or refused), not shown.
MAX_MESSAGE_BYTES = 4096
#: Bound on one publish.
NTFY_TIMEOUT = 5.0
MAX_TOKEN_BYTES = 512
#: In-flight publishes per provider instance (one namespace's server).
NTFY_CONCURRENCY = 16
#: Longest ntfy error text kept in a report.
MAX_ERROR_TEXT = 512

_TOPIC = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
_RESERVED_TOPICS = frozenset(
    {"docs", "static", "file", "app", "metrics", "account", "settings", "signup", "login", "v1"}
)
_FIELDS = {"base_url", "auth_token", "username", "password", "ca_bundle"}
_SECRETS = ("auth_token", "password")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class NtfyTarget:
    """Where one token publishes: a topic (JSON to the root) or a UnifiedPush endpoint path."""

    __slots__ = ("path", "topic")

    def __init__(self, topic: str = "", path: str = "") -> None:
        self.topic = topic
        self.path = path

    @classmethod
    def parse(cls, token: str, base_url: str) -> NtfyTarget:
        """Raise `CredentialsError` (text free of the token) for a bad topic or a foreign endpoint."""
        token = token.strip()
        if not token:
            raise CredentialsError("token is required")
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise CredentialsError(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        if "://" not in token:
            if not _TOPIC.match(token):
                raise CredentialsError("an ntfy topic must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'")
            if token.lower() in _RESERVED_TOPICS:
                raise CredentialsError("that ntfy topic name is reserved by the server")
            return cls(topic=token)
        try:
            endpoint = httpx.URL(token)
        except (httpx.InvalidURL, ValueError):
            raise CredentialsError("the UnifiedPush endpoint is not a valid URL") from None
        if endpoint.userinfo:
            raise CredentialsError("the UnifiedPush endpoint must not contain a user name or password")
        if not base_url:
            raise CredentialsError("no ntfy server is configured to accept UnifiedPush endpoints")
        base = httpx.URL(base_url)
        if _origin(endpoint) != _origin(base):
            raise CredentialsError("the UnifiedPush endpoint must be on the configured ntfy server (scheme and host)")
        prefix = base.path.rstrip("/") + "/"
        path = endpoint.path
        if not path.startswith(prefix) or not _TOPIC.match(path[len(prefix):]):
            raise CredentialsError("the UnifiedPush endpoint must name one topic on the configured ntfy server")
        return cls(path=path)


def build_publish(message: PushMessage, topic: str) -> dict[str, Any]:
    """ntfy's JSON publish body. The body text carries the data as JSON when there is no body."""
    text = message.body or (json.dumps(message.data, separators=(",", ":"), ensure_ascii=False) if message.data else "")
    doc: dict[str, Any] = {"topic": topic}
    if text:
        doc["message"] = text
    if message.title:
        doc["title"] = message.title
    doc["priority"] = 4 if message.priority == "high" else 3
    if message.channel:
        doc["tags"] = [message.channel]
    if message.ttl_seconds == 0:
        doc["cache"] = "no"  # "deliver now or never": do not keep it for later pollers
    return doc


def _unifiedpush_body(message: PushMessage) -> bytes:
    doc = message.to_dict()
    doc.pop("target_provider", None)
    doc.pop("exclude_provider", None)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _seconds_to_utc_midnight() -> float:
    now = datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def classify(status: int, body: bytes, retry_after: str | None) -> Outcome:
    """Map an ntfy error response (JSON ``{"code", "http", "error"}``) to an outcome; the 5-digit code is kept."""
    code = 0
    text = ""
    try:
        doc = json.loads(body[:MAX_ERROR_TEXT * 4])
        if isinstance(doc, dict):
            code = int(doc.get("code") or 0)
            text = str(doc.get("error") or "")[:MAX_ERROR_TEXT]
    except (ValueError, TypeError):
        text = body[:MAX_ERROR_TEXT].decode("utf-8", "replace")
    reason = f"ntfy {code}" if code else f"HTTP {status}"
    if status in (401, 403) or code == 42909:  # 42909: too many failed auths, a credentials problem
        return Outcome.failed(FailureKind.CREDENTIALS, reason, text, status)
    if code == 42908:  # daily quota: resets at UTC midnight, seconds of backoff cannot help
        return Outcome.failed(FailureKind.TRANSIENT, reason, text, status, retry_after=_seconds_to_utc_midnight())
    if status == 429 or status >= 500:
        return Outcome.failed(FailureKind.TRANSIENT, reason, text, status, retry_after=parse_retry_after(retry_after))
    return Outcome.failed(FailureKind.PERMANENT, reason, text, status)


class NtfyProvider(BaseProvider):
    name = "ntfy"
    concurrency = NTFY_CONCURRENCY

    def __init__(
        self,
        base_url: str,
        *,
        authorization: str = "",
        trusted: bool = False,
        allow_private_endpoints: bool = False,
        ca_bundle: str = "",
        timeout: float = NTFY_TIMEOUT,
        tls: TLSContexts | None = None,
        client: HTTPClient | None = None,
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self._base = httpx.URL(self.base_url + "/")
        self._authorization = authorization
        self.timeout = timeout
        self.client = client or PoolClient(
            ssl_context=(tls or TLSContexts()).get(ca_bundle), guarded=not trusted,
            allow_private_endpoints=allow_private_endpoints, lanes=NTFY_CONCURRENCY,
        )
        self.breaker = CredentialsBreaker()

    async def send_one(self, delivery: Delivery) -> Outcome:
        blocked = self.breaker.check()
        if blocked is not None:
            return blocked
        try:
            target = NtfyTarget.parse(delivery.token, self.base_url)
        except CredentialsError as exc:
            return Outcome.failed(FailureKind.PERMANENT, "InvalidToken", str(exc))
        headers = [("Authorization", self._authorization)] if self._authorization else []
        if target.topic:
            doc = build_publish(delivery.message, target.topic)
            if len(doc.get("message", "").encode()) > MAX_MESSAGE_BYTES:
                return Outcome.failed(FailureKind.PERMANENT, "MessageTooBig",
                                      f"the ntfy message is over {MAX_MESSAGE_BYTES} bytes")
            url = str(self._base)
            content = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
            headers.append(("Content-Type", "application/json"))
        else:
            url = str(self._base.copy_with(path=target.path, query=None))
            content = _unifiedpush_body(delivery.message)
            if len(content) > MAX_MESSAGE_BYTES:
                return Outcome.failed(FailureKind.PERMANENT, "MessageTooBig",
                                      f"the UnifiedPush message is over {MAX_MESSAGE_BYTES} bytes")
        try:
            response = await self.client.request("POST", url, headers, content, timeout=self.timeout)
        except TransportError as exc:
            return transport_failure(exc, delivery.token)
        if response.status < 300:
            return Outcome.ok(response.status)
        if 300 <= response.status < 400:
            return Outcome.failed(FailureKind.PERMANENT, "Redirect", "the ntfy server answered with a redirect; "
                                  "redirects are not followed", response.status)
        outcome = classify(response.status, response.body, response.headers.get("retry-after"))
        if outcome.kind is FailureKind.CREDENTIALS:
            self.breaker.trip(outcome)
        return outcome

    async def aclose(self) -> None:
        await self.client.aclose()


def _authorization(token: str, username: str, password: str) -> str:
    if username or password:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Bearer {token}" if token else ""


class NtfySpec:
    """Credentials: ``base_url``, optional ``auth_token`` or ``username`` + ``password``, ``ca_bundle``.

    The namespace's flat config (``ntfy_base_url``, ``ntfy_auth_token``) also configures ntfy; a saved
    document overrides it field by field.
    """

    name = "ntfy"

    def __init__(self, *, allow_private_endpoints: bool = False, timeout: float = NTFY_TIMEOUT,
                 tls: TLSContexts | None = None) -> None:
        self.allow_private_endpoints = allow_private_endpoints
        self.tls = tls or TLSContexts()
        self.timeout = timeout

    def validate(self, document: Mapping[str, Any]) -> dict[str, Any]:
        reject_unknown_fields(document, _FIELDS, "ntfy credentials")
        out: dict[str, Any] = {}
        # Plain http stays allowed: self-hosted ntfy servers often run without TLS.
        base_url = url_field(document, "base_url", allow_private_endpoints=self.allow_private_endpoints,
                             https_only=False)
        token = validate_secret(document, "auth_token")
        username = require_string(document, "username", max_len=MAX_SECRET_BYTES, required=False)
        password = validate_secret(document, "password")
        ca_bundle = check_ca_bundle(document)
        if token and (username or password):
            raise CredentialsError("give either auth_token or username + password, not both")
        if bool(username) != bool(password):
            raise CredentialsError("username and password must be given together")
        if ":" in username or len(username) > 256:
            raise CredentialsError("username must be at most 256 characters without ':'")
        if base_url.startswith("http:") and (token or password) and not self.allow_private_endpoints:
            raise CredentialsError("base_url must be https when auth_token or password is set "
                                   "(they would travel unencrypted)")
        for key, value in (("base_url", base_url), ("auth_token", token), ("username", username),
                           ("password", password), ("ca_bundle", ca_bundle)):
            if value:
                out[key] = value
        if not out:
            raise CredentialsError("ntfy credentials need at least base_url (or auth_token for the default server)")
        return out

    async def check_urls(self, document: Mapping[str, Any]) -> None:
        """Save-time SSRF check of base_url: every resolved address must be public."""
        await check_saved_urls([("base_url", document.get("base_url"))],
                               allow_private_endpoints=self.allow_private_endpoints)

    def redact(self, document: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"base_url": document.get("base_url", "")}
        if document.get("username"):
            out["username"] = document["username"]
        for key in _SECRETS:
            out[f"has_{key}"] = bool(document.get(key))
        out["has_ca_bundle"] = bool(document.get("ca_bundle"))
        return out

    def validate_token(self, token: str, document: Mapping[str, Any] | None) -> str:
        token = token.strip()
        base_url = str((document or {}).get("base_url") or "")
        if "://" in token and not base_url:
            # The server comes from the flat config, which this check does not see: check the shape here;
            # the send checks the scheme and host against the server actually configured.
            try:
                check_url_syntax(token, allow_private_endpoints=True)
            except UnsafeURL as exc:
                raise CredentialsError(f"the UnifiedPush endpoint is not acceptable: {exc}") from None
            base_url = str(httpx.URL(token).copy_with(path="/", query=None, fragment=None)).rstrip("/")
        NtfyTarget.parse(token, base_url)
        return token

    def document_for(self, config: ResolvedConfig) -> Mapping[str, Any] | None:
        doc = config.credentials.get(self.name) or {}
        operator_doc = self.name in config.operator_providers
        base_url = str(doc.get("base_url") or "")
        if base_url:
            trusted = operator_doc
        else:
            base_url = config.ntfy_base_url
            trusted = not config.ntfy_base_url_tenant
        if not base_url:
            return None
        effective: dict[str, Any] = {"base_url": base_url, "trusted": trusted}
        if doc.get("username"):
            effective["username"] = doc["username"]
            effective["password"] = doc.get("password", "")
        elif doc.get("auth_token") or config.ntfy_auth_token:
            effective["auth_token"] = doc.get("auth_token") or config.ntfy_auth_token
        if doc.get("ca_bundle"):
            effective["ca_bundle"] = doc["ca_bundle"]
        if not trusted and not self.allow_private_endpoints and base_url.lower().startswith("http:"):
            # The URL and the secret can come from two saves (flat config, credentials document), so
            # neither save saw both: never send a tenant's secret to a plain-http tenant server.
            for secret in ("auth_token", "username", "password"):
                effective.pop(secret, None)
        return effective

    def build(self, config: ResolvedConfig, document: Mapping[str, Any]) -> NtfyProvider:
        return NtfyProvider(
            str(document["base_url"]),
            authorization=_authorization(
                str(document.get("auth_token", "")), str(document.get("username", "")),
                str(document.get("password", "")),
            ),
            trusted=bool(document.get("trusted")),
            allow_private_endpoints=self.allow_private_endpoints,
            ca_bundle=str(document.get("ca_bundle", "")),
            timeout=self.timeout,
            tls=self.tls,
        )
