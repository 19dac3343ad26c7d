"""Shared plumbing for the HTTP push providers (ntfy, Expo, Web Push): tenant URL fields, CA bundles,
clients that pass the SSRF guard, `Retry-After`, transport-error classification and the
credentials-broken cooldown.

Kept out of the provider modules so each of those reads as its wire protocol only.
"""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx

from ..push.credentials import CredentialsError
from ..push.provider import FailureKind, Outcome
from ..push.redact import REQUEST_URL
from ..push.urlguard import UnsafeURL, blocked_by_guard, check_url_syntax, guarded_transport

__all__ = [
    "CREDENTIALS_COOLDOWN",
    "MAX_CA_BUNDLE_BYTES",
    "MAX_RETRY_AFTER",
    "MAX_SECRET_BYTES",
    "Cooldown",
    "check_fields",
    "LaneClient",
    "make_client",
    "optional_str",
    "parse_retry_after",
    "transport_failure",
    "validate_ca_bundle",
    "validate_secret",
    "validate_url",
]

#: After the service refuses a tenant's credentials, sends fail fast (no request) for this long.
CREDENTIALS_COOLDOWN = 60.0
#: Largest `Retry-After` honoured; longer waits are capped (the caller's deadline bounds them anyway).
MAX_RETRY_AFTER = 3600.0
MAX_CA_BUNDLE_BYTES = 64 * 1024
MAX_SECRET_BYTES = 4096
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


def check_fields(provider: str, document: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(document, Mapping):
        raise CredentialsError(f"{provider} credentials must be a JSON object")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise CredentialsError(
            f"{provider} credentials: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def optional_str(document: Mapping[str, Any], field: str) -> str:
    value = document.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{field} must be a string")
    return value.strip()


def validate_secret(document: Mapping[str, Any], field: str) -> str:
    """A printable-ASCII secret (token, password). The error never echoes the value."""
    value = optional_str(document, field)
    if value and (len(value) > MAX_SECRET_BYTES or not _PRINTABLE.match(value)):
        raise CredentialsError(f"{field} must be printable ASCII without spaces, at most {MAX_SECRET_BYTES} bytes")
    return value


def validate_url(document: Mapping[str, Any], field: str, *, allow_private: bool) -> str:
    """A tenant URL: literal check now (no DNS); the spec's `check_urls` resolves it when saved."""
    value = optional_str(document, field)
    if not value:
        return ""
    try:
        check_url_syntax(value, allow_private=allow_private)
    except UnsafeURL as exc:
        raise CredentialsError(f"{field} rejected: {exc}") from None
    return value.rstrip("/")


def validate_ca_bundle(document: Mapping[str, Any], field: str = "ca_bundle") -> str:
    value = optional_str(document, field)
    if not value:
        return ""
    if len(value.encode()) > MAX_CA_BUNDLE_BYTES:
        raise CredentialsError(f"{field} is longer than {MAX_CA_BUNDLE_BYTES} bytes")
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise CredentialsError(f"{field} must be PEM certificates (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError):
        raise CredentialsError(f"{field} does not parse as PEM certificates") from None
    return value


#: Sent with every request: services see who is calling, not a library default.
USER_AGENT = "wasmhost-push/1"


class LaneClient:
    """HTTP/1.1 connections as independent lanes: one single-connection transport each; a request goes to
    the least busy lane.

    httpcore's pool rescans (and polls the socket of) every connection each time a request starts or
    ends, so one pool of N connections costs O(N) per request; lanes keep each pool at one connection.
    Requests go straight to the transport: no cookies carried between requests, redirects never followed,
    and none of the client layer's per-request work. Long-lived: one per provider instance.
    """

    def __init__(self, transports: list[httpx.AsyncBaseTransport], timeout: float) -> None:
        self.transports = transports
        self._busy = [0] * len(transports)
        self._extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}

    @property
    def busy(self) -> int:
        return sum(self._busy)

    async def post(
        self,
        url: httpx.URL | str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        lane = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[lane] += 1
        try:
            request = httpx.Request("POST", url, content=content, json=json,
                                    headers={"User-Agent": USER_AGENT, **(headers or {})}, extensions=self._extensions)
            response = await self.transports[lane].handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            finally:
                await response.aclose()
            return response
        finally:
            self._busy[lane] -= 1

    async def aclose(self) -> None:
        for transport in self.transports:
            await transport.aclose()


def make_client(
    *,
    guarded: bool,
    allow_private: bool,
    ca_bundle: str = "",
    timeout: float = 10.0,
    max_connections: int = 16,
) -> LaneClient:
    """The long-lived client of one provider instance. Tenant URLs get the guarded transport (which
    re-checks every address it connects to); redirects are never followed."""
    # One SSL context for all lanes: building one loads the CA store, which is slow.
    verify = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else httpx.create_ssl_context(trust_env=False)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    transports: list[httpx.AsyncBaseTransport] = [
        guarded_transport(allow_private, verify=verify, limits=limits) if guarded
        else httpx.AsyncHTTPTransport(verify=verify, limits=limits, trust_env=False)
        for _ in range(max_connections)
    ]
    return LaneClient(transports, timeout)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date), capped; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def transport_failure(exc: httpx.HTTPError) -> Outcome:
    """Classify a request that got no response. The text names the error class only: httpx messages can
    quote the request URL, which carries tokens."""
    if blocked_by_guard(exc):
        cause = exc.__cause__ or exc
        return Outcome.failed(FailureKind.PERMANENT, "BlockedURL", str(cause).split(": ", 1)[-1])
    if _caused_by(exc, ssl.SSLCertVerificationError):
        # Not worth retrying: the endpoint's certificate does not verify (wrong host, or a private CA
        # missing from ca_bundle).
        return Outcome.failed(FailureKind.PERMANENT, "TLSError", "the push service's certificate did not verify")
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.failed(FailureKind.TRANSIENT, "Timeout",
                              f"the push service did not answer ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return Outcome.failed(FailureKind.TRANSIENT, "ConnectionError", f"connection failed ({type(exc).__name__})")
    return Outcome.failed(FailureKind.PERMANENT, "RequestError", f"request failed ({type(exc).__name__})")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _RedactRequestURLs(logging.Filter):
    """httpx logs every request's full URL at INFO; push URLs carry device tokens (Web Push endpoints,
    UnifiedPush topics), so the URL argument is replaced before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                REQUEST_URL if isinstance(a, httpx.URL) or (isinstance(a, str) and "://" in a) else a
                for a in record.args
            )
        return True


_HTTPX_LOG = logging.getLogger("httpx")
if not any(isinstance(f, _RedactRequestURLs) for f in _HTTPX_LOG.filters):
    _HTTPX_LOG.addFilter(_RedactRequestURLs())


class Cooldown:
    """Fail fast after the service refused the credentials, instead of hammering it with every send."""

    def __init__(self, seconds: float = CREDENTIALS_COOLDOWN) -> None:
        self.seconds = seconds
        self._until: dict[str, tuple[float, Outcome]] = {}

    def trip(self, outcome: Outcome, key: str = "") -> None:
        self._until[key] = (time.monotonic() + self.seconds, outcome)

    def active(self, key: str = "") -> Outcome | None:
        entry = self._until.get(key)
        if entry is None:
            return None
        until, outcome = entry
        if time.monotonic() >= until:
            del self._until[key]
            return None
        return Outcome.failed(
            FailureKind.CREDENTIALS, outcome.reason,
            f"{outcome.message} (not retried for {self.seconds:g} s; fix the credentials)".strip(),
            outcome.status,
        )
