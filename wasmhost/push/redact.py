"""Scrub failure text before it reaches a report, a log line or an exception.

Request URLs carry device tokens (ntfy topics, Web Push endpoints) and tokens are secrets, so both are
replaced by fixed markers wherever failure text is shown.
"""

from __future__ import annotations

import re

__all__ = ["DEVICE_TOKEN", "REQUEST_URL", "redact"]

DEVICE_TOKEN = "[device-token]"
REQUEST_URL = "[request-url]"
_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>]+", re.IGNORECASE)
MAX_TEXT = 500


def redact(text: str, *secrets: str) -> str:
    """Replace every URL and every occurrence of each secret (and each of its URL-safe forms)."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, DEVICE_TOKEN)
    text = _URL.sub(REQUEST_URL, text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
