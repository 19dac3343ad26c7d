"""What the HTTP providers (APNs, FCM) share: endpoint checks, TLS trust, long-lived clients, the
credentials breaker, Retry-After, and turning transport errors into classified, redacted outcomes."""

from __future__ import annotations

import email.utils
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ..push.credentials import CredentialsError
from ..push.provider import FailureKind, Outcome
from ..push.redact import redact
from ..push.urlguard import UnsafeURL, blocked_by_guard, check_url_syntax, guarded_transport

__all__ = [
    "CREDENTIALS_COOLDOWN",
    "MAX_CA_BUNDLE_BYTES",
    "MAX_RETRY_AFTER",
    "QUIET_LOGGERS",
    "CredentialsBreaker",
    "check_ca_bundle",
    "check_https_url",
    "make_client",
    "parse_retry_after",
    "quiet_http_loggers",
    "reject_unknown_fields",
    "require_string",
    "transport_failure",
]

#: How long a provider whose credentials were refused answers without a request (don't hammer the service).
CREDENTIALS_COOLDOWN = 60.0
#: Longest `Retry-After` we honour; a longer one is clamped (the dispatcher's deadline bounds it anyway).
MAX_RETRY_AFTER = 3600.0
#: Largest PEM bundle a tenant may pin for a private endpoint.
MAX_CA_BUNDLE_BYTES = 64 * 1024
#: Libraries under our HTTP clients that log request URLs (device tokens) at INFO (httpx) or header
#: values (provider JWTs, OAuth tokens) at DEBUG (hpack, h2, httpcore). Unless the operator set a level
#: for them, they log warnings only, so turning on DEBUG for the gateway cannot leak a secret.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "h2")


def quiet_http_loggers() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


quiet_http_loggers()


def require_string(document: Mapping[str, Any], key: str, *, max_len: int, required: bool = True) -> str:
    """The field as a stripped string, or a `CredentialsError` naming it (never echoing the value)."""
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


def reject_unknown_fields(document: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(document) - known)
    if unknown:
        raise CredentialsError(f"unexpected field(s) in {where}: {', '.join(unknown)}")


def check_https_url(url: str, field: str, *, allow_private: bool, path_allowed: bool) -> str:
    """A tenant URL: https only (secrets travel on it), passes the SSRF guard's save-time syntax check.

    The resolving check happens at connect time in the guarded transport, so DNS rebinding is covered too.
    """
    try:
        parsed = check_url_syntax(url, allow_private=allow_private)
    except UnsafeURL as exc:
        raise CredentialsError(f"{field}: {exc}") from None
    if parsed.scheme != "https":
        raise CredentialsError(f"{field} must be an https URL")
    if parsed.query or parsed.fragment:
        raise CredentialsError(f"{field} must not have a query or fragment")
    if not path_allowed and parsed.path not in ("", "/"):
        raise CredentialsError(f"{field} must be a base URL (scheme, host and port only)")
    return str(parsed).rstrip("/") if not path_allowed else str(parsed)


def check_ca_bundle(document: Mapping[str, Any]) -> str:
    """The optional PEM bundle that replaces the public roots for this credential's endpoints."""
    bundle = document.get("ca_bundle")
    if bundle is None or bundle == "":
        return ""
    if not isinstance(bundle, str):
        raise CredentialsError("ca_bundle must be a PEM string")
    if len(bundle.encode()) > MAX_CA_BUNDLE_BYTES:
        raise CredentialsError(f"ca_bundle is larger than {MAX_CA_BUNDLE_BYTES} bytes")
    if "-----BEGIN CERTIFICATE-----" not in bundle:
        raise CredentialsError("ca_bundle must contain PEM certificates")
    try:
        ssl.create_default_context(cadata=bundle)
    except (ssl.SSLError, ValueError):
        raise CredentialsError("ca_bundle is not a valid PEM certificate bundle") from None
    return bundle


def make_client(
    *,
    base_url: str,
    ca_bundle: str,
    guarded: bool,
    allow_private: bool,
    timeout: float,
    max_connections: int,
    keepalive_expiry: float,
) -> httpx.AsyncClient:
    """One long-lived HTTP/2 client for one credential. Tenant endpoints connect through the SSRF guard."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else True
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=keepalive_expiry
    )
    transport: httpx.AsyncBaseTransport
    if guarded:
        transport = guarded_transport(allow_private, verify=verify, http2=True, limits=limits)
    else:
        transport = httpx.AsyncHTTPTransport(verify=verify, http2=True, limits=limits, trust_env=False)
    # trust_env off: an environment proxy would connect for us and bypass the guard.
    return httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=httpx.Timeout(timeout), trust_env=False, follow_redirects=False
    )


def parse_retry_after(value: str | None, clock: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), clamped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - clock()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def transport_failure(exc: httpx.HTTPError, *secrets: str) -> Outcome:
    """Classify a request that got no response. The text names the error type, never the URL or a token."""
    text = redact(f"{type(exc).__name__}: {exc}", *secrets)
    if blocked_by_guard(exc):
        return Outcome.failed(FailureKind.PERMANENT, "BlockedURL", text)
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.failed(FailureKind.TRANSIENT, "Timeout", text)
    cause: BaseException | None = exc
    for _ in range(8):  # the TLS error sits a few causes down, under httpcore's wrapper
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            # A certificate we cannot verify will not verify on retry: the endpoint or ca_bundle is wrong.
            return Outcome.failed(FailureKind.CREDENTIALS, "TLSVerifyFailed", text)
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TransportError):
        return Outcome.failed(FailureKind.TRANSIENT, "ConnectionError", text)
    return Outcome.failed(FailureKind.PERMANENT, "RequestError", text)


class CredentialsBreaker:
    """After the service refuses our credentials, answer CREDENTIALS without a request for a cooldown.

    One per provider instance: a tenant who fixes its credentials gets a new provider (and a closed breaker).
    """

    def __init__(self, cooldown: float = CREDENTIALS_COOLDOWN, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._until = 0.0
        self._outcome: Outcome | None = None
        self.trips = 0

    def check(self) -> Outcome | None:
        """The outcome to return instead of sending, while the breaker is open."""
        if self._outcome is None or self._clock() >= self._until:
            return None
        left = self._until - self._clock()
        return Outcome.failed(
            FailureKind.CREDENTIALS, self._outcome.reason,
            f"credentials were refused ({self._outcome.message}); not sending for another {left:.0f} s",
            self._outcome.status,
        )

    def trip(self, outcome: Outcome) -> None:
        self.trips += 1
        self._outcome = outcome
        self._until = self._clock() + self.cooldown
