"""What the HTTP push providers share: credential field checks (tenant URLs, secrets, CA bundles), clients
that pass the SSRF guard, `Retry-After`, turning transport errors into classified outcomes whose text
never quotes a URL or a token, the credentials breaker, and keeping the HTTP libraries' logs secret-free.

Kept out of the provider modules so each of those reads as its wire protocol only.
"""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

from ..push.credentials import CredentialsError
from ..push.provider import FailureKind, Outcome
from ..push.redact import REQUEST_URL
from ..push.urlguard import (
    MAX_URL_BYTES,
    UnsafeURL,
    blocked_by_guard,
    check_url,
    check_url_syntax,
    guarded_transport,
)
from ._tls import ALPN_H1, ALPN_H2, TLSContexts

__all__ = [
    "CREDENTIALS_COOLDOWN",
    "MAX_CA_BUNDLE_BYTES",
    "MAX_RETRY_AFTER",
    "MAX_SECRET_BYTES",
    "QUIET_LOGGERS",
    "USER_AGENT",
    "CredentialsBreaker",
    "LaneClient",
    "check_ca_bundle",
    "check_saved_urls",
    "check_tenant_url",
    "endpoint_fields",
    "make_http2_client",
    "make_lane_client",
    "parse_retry_after",
    "quiet_http_loggers",
    "reject_unknown_fields",
    "require_string",
    "transport_failure",
    "url_field",
    "validate_secret",
]

#: How long a provider whose credentials were refused answers without a request (don't hammer the service).
CREDENTIALS_COOLDOWN = 60.0
#: Longest `Retry-After` we honour; a longer one is clamped (the dispatcher's deadline bounds it anyway).
MAX_RETRY_AFTER = 3600.0
#: Largest PEM bundle a tenant may pin for a private endpoint.
MAX_CA_BUNDLE_BYTES = 64 * 1024
#: Longest secret (token, password) a tenant may store.
MAX_SECRET_BYTES = 4096
#: Sent with every lane-client request: services see who is calling, not a library default.
USER_AGENT = "wasmhost-push/1"
#: Libraries under our HTTP clients that log request URLs (device tokens) at INFO (httpx) or header
#: values (provider JWTs, OAuth tokens) at DEBUG (hpack, h2, httpcore). Unless the operator set a level
#: for them, they log warnings only, so turning on DEBUG for the gateway cannot leak a secret.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "h2")
#: How many causes down a wrapped exception is searched (the TLS error sits under httpcore's wrapper).
_MAX_CAUSES = 8
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


# -- logs ----------------------------------------------------------------------------------------


class _RedactRequestURLs(logging.Filter):
    """httpx logs every request's full URL at INFO; push URLs carry device tokens (Web Push endpoints,
    UnifiedPush topics), so the URL argument is replaced before any handler sees it, whatever the level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                REQUEST_URL if isinstance(a, httpx.URL) or (isinstance(a, str) and "://" in a) else a
                for a in record.args
            )
        return True


def quiet_http_loggers() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactRequestURLs) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactRequestURLs())


quiet_http_loggers()


# -- credential fields ---------------------------------------------------------------------------


def reject_unknown_fields(document: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse a non-object or a field we do not know (a typo would otherwise be silently ignored)."""
    if not isinstance(document, Mapping):
        raise CredentialsError(f"{where} must be a JSON object")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise CredentialsError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def require_string(document: Mapping[str, Any], key: str, *, max_len: int, required: bool = True) -> str:
    """The field as a stripped string ("" when optional and absent), or a `CredentialsError` naming it
    (never echoing the value)."""
    value = document.get(key)
    if value is None or value == "":
        if required:
            raise CredentialsError(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{key} must be a string")
    value = value.strip()
    if required and not value:
        raise CredentialsError(f"{key} is required")
    if len(value) > max_len:
        raise CredentialsError(f"{key} is longer than {max_len} characters")
    return value


def validate_secret(document: Mapping[str, Any], field: str) -> str:
    """An optional printable-ASCII secret (token, password). The error never echoes the value."""
    value = require_string(document, field, max_len=MAX_SECRET_BYTES, required=False)
    if value and not _PRINTABLE.match(value):
        raise CredentialsError(f"{field} must be printable ASCII without spaces, at most {MAX_SECRET_BYTES} bytes")
    return value


def check_tenant_url(url: str, field: str, *, allow_private: bool, https_only: bool = True, base: bool = True,
                     path_allowed: bool = True) -> str:
    """A tenant URL, normalised: passes the SSRF guard's literal check (no DNS; the spec's `check_urls`
    resolves it at save time, and the guarded transport again at connect time, so rebinding is covered).

    `base`: a prefix we append paths to, so a trailing "/" is dropped. `https_only` is off only where the
    protocol has plain-HTTP deployments (self-hosted ntfy).
    """
    try:
        parsed = check_url_syntax(url, allow_private=allow_private)
    except UnsafeURL as exc:
        raise CredentialsError(f"{field} rejected: {exc}") from None
    if https_only and parsed.scheme != "https":
        raise CredentialsError(f"{field} must be an https URL")
    if parsed.query or parsed.fragment:
        raise CredentialsError(f"{field} must not have a query or fragment")
    if not path_allowed and parsed.path not in ("", "/"):
        raise CredentialsError(f"{field} must be a base URL (scheme, host and port only)")
    return str(parsed).rstrip("/") if base else str(parsed)


def url_field(document: Mapping[str, Any], field: str, *, allow_private: bool, https_only: bool = True,
              path_allowed: bool = True) -> str:
    """The optional base-URL field of a credentials document, checked by `check_tenant_url`; "" when absent."""
    value = require_string(document, field, max_len=MAX_URL_BYTES, required=False)
    if not value:
        return ""
    return check_tenant_url(value, field, allow_private=allow_private, https_only=https_only,
                            path_allowed=path_allowed)


def check_ca_bundle(document: Mapping[str, Any], field: str = "ca_bundle") -> str:
    """The optional PEM bundle that replaces the public roots for this credential's endpoints."""
    value = document.get(field)
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise CredentialsError(f"{field} must be a PEM string")
    value = value.strip()
    if len(value.encode()) > MAX_CA_BUNDLE_BYTES:
        raise CredentialsError(f"{field} is larger than {MAX_CA_BUNDLE_BYTES} bytes")
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise CredentialsError(f"{field} must be PEM certificates (-----BEGIN CERTIFICATE-----)")
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError):
        raise CredentialsError(f"{field} does not parse as PEM certificates") from None
    return value


def endpoint_fields(document: Mapping[str, Any], *, allow_private: bool, https_only: bool = True,
                    path_allowed: bool = False) -> dict[str, str]:
    """The private-deployment overrides every network provider accepts, ``endpoint`` and ``ca_bundle``,
    checked; only those given."""
    out = {"endpoint": url_field(document, "endpoint", allow_private=allow_private, https_only=https_only,
                                 path_allowed=path_allowed),
           "ca_bundle": check_ca_bundle(document)}
    return {k: v for k, v in out.items() if v}


async def check_saved_urls(fields: Iterable[tuple[str, Any]], *, allow_private: bool) -> None:
    """The save-time SSRF check of each given (field, URL): resolves the host (fail closed) and refuses
    any non-public address; the error names the field and the host, never the URL."""
    for field, url in fields:
        if url:
            try:
                await check_url(str(url), allow_private=allow_private)
            except UnsafeURL as exc:
                raise CredentialsError(f"{field} rejected: {exc}") from None


# -- clients -------------------------------------------------------------------------------------




def _transport(*, guarded: bool, allow_private: bool, verify: ssl.SSLContext, limits: httpx.Limits,
               http2: bool) -> httpx.AsyncBaseTransport:
    """Tenant URLs get the guarded transport, which re-checks every address it connects to. trust_env is
    off either way: an environment proxy would connect for us and bypass the guard."""
    if guarded:
        return guarded_transport(allow_private, verify=verify, http2=http2, limits=limits)
    return httpx.AsyncHTTPTransport(verify=verify, http2=http2, limits=limits, trust_env=False)


def make_http2_client(
    *,
    base_url: str,
    ca_bundle: str,
    guarded: bool,
    allow_private: bool,
    timeout: float,
    max_connections: int,
    keepalive_expiry: float,
    tls: TLSContexts | None = None,
) -> httpx.AsyncClient:
    """One long-lived HTTP/2 client for one credential (FCM); redirects are never followed."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=keepalive_expiry
    )
    verify = (tls or TLSContexts()).get(ca_bundle, alpn=ALPN_H2)
    transport = _transport(guarded=guarded, allow_private=allow_private, verify=verify, limits=limits, http2=True)
    return httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False
    )


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


def make_lane_client(
    *,
    guarded: bool,
    allow_private: bool,
    ca_bundle: str = "",
    timeout: float = 10.0,
    max_connections: int = 16,
    tls: TLSContexts | None = None,
) -> LaneClient:
    """The long-lived HTTP/1.1 client of one provider instance (ntfy, Expo, a Web Push origin)."""
    verify = (tls or TLSContexts()).get(ca_bundle, alpn=ALPN_H1)  # one context shared by all lanes
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return LaneClient([_transport(guarded=guarded, allow_private=allow_private, verify=verify, limits=limits,
                                  http2=False) for _ in range(max_connections)], timeout)


# -- answers -------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), clamped to
    [0, MAX_RETRY_AFTER]; None when absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return min(max(when.timestamp() - clock(), 0.0), MAX_RETRY_AFTER)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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


class CredentialsBreaker:
    """After the service refuses our credentials, answer CREDENTIALS without a request for a cooldown.

    One per provider instance: a tenant who fixes its credentials gets a new provider (and a closed breaker).
    `key` scopes a trip where the refusal is per service (Web Push: per push-service origin).
    """

    def __init__(self, cooldown: float = CREDENTIALS_COOLDOWN, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._open: dict[str, tuple[float, Outcome]] = {}
        self.trips = 0

    def check(self, key: str = "") -> Outcome | None:
        """The outcome to return instead of sending, while the breaker is open for `key`."""
        entry = self._open.get(key)
        if entry is None:
            return None
        until, outcome = entry
        if self._clock() >= until:
            del self._open[key]
            return None
        return Outcome.failed(
            FailureKind.CREDENTIALS, outcome.reason,
            f"{outcome.message} (not retried for {self.cooldown:g} s; fix the credentials)".strip(),
            outcome.status,
        )

    def trip(self, outcome: Outcome, key: str = "") -> None:
        self.trips += 1
        self._open[key] = (self._clock() + self.cooldown, outcome)
