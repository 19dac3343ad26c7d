"""The one failure classifier for requests that got no answer, and `Retry-After` for those that did.

Every client raises only `_client.TransportError`s, so this is the only place that decides what a
transport failure means. A TLS verification failure is CREDENTIALS (not PERMANENT): which roots are
trusted for which endpoint comes from the credentials document (`endpoint`, `ca_bundle`) or the
operator's, so it fails the same way for every device until that document is fixed; CREDENTIALS says
so to the tenant, and lets providers stop sending for a while instead of failing each delivery anew.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

from ..push.provider import FailureKind, Outcome
from ..push.redact import redact
from ._client import (
    Blocked,
    ConnectFailed,
    ProtocolFailure,
    RequestTimeout,
    TLSVerifyFailed,
    TransportError,
    Unanswered,
)

__all__ = ["MAX_RETRY_AFTER", "parse_retry_after", "transport_failure"]

#: Longest `Retry-After` we honour; a longer one is clamped (the dispatcher's deadline bounds it anyway).
MAX_RETRY_AFTER = 3600.0


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


def transport_failure(exc: TransportError, *secrets: str) -> Outcome:
    """Classify a request that got no answer. The text names what failed, never the URL or a token."""
    text = redact(f"{type(exc).__name__}: {exc}", *secrets)
    if isinstance(exc, Blocked):  # the tenant's URL is not public: retrying cannot help
        return Outcome.failed(FailureKind.PERMANENT, "BlockedURL", text)
    if isinstance(exc, TLSVerifyFailed):  # will not verify on retry: the endpoint or ca_bundle is wrong
        return Outcome.failed(FailureKind.CREDENTIALS, "TLSVerifyFailed", text)
    if isinstance(exc, RequestTimeout):
        return Outcome.failed(FailureKind.TRANSIENT, "Timeout", text)
    if isinstance(exc, ConnectFailed | Unanswered | ProtocolFailure):
        return Outcome.failed(FailureKind.TRANSIENT, "ConnectionError", text)
    return Outcome.failed(FailureKind.PERMANENT, "RequestError", text)  # InvalidRequest, ClientClosed
