"""Keep the HTTP libraries' logs free of secrets. Called by the wiring (`Services.open`), not on import:
an embedder who configures these loggers keeps its own settings."""

from __future__ import annotations

import logging

import httpx

from ..push.redact import REQUEST_URL

__all__ = ["QUIET_LOGGERS", "quiet_http_loggers"]

#: Libraries under our HTTP clients that log request URLs (device tokens) at INFO (httpx) or header
#: values (provider JWTs, OAuth tokens) at DEBUG (hpack, h2, httpcore). Unless the operator set a level
#: for them, they log warnings only, so turning on DEBUG for the gateway cannot leak a secret.
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "h2")


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
    """Set the levels and the filter above; idempotent, and a level the operator set is kept."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactRequestURLs) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactRequestURLs())
