"""RFC 8030 ``Topic`` from a collapse id: shared by Web Push and FCM's Web Push block."""

from __future__ import annotations

import hashlib
import re

from ._ece import b64url_encode

__all__ = ["MAX_TOPIC_CHARS", "topic_for"]

MAX_TOPIC_CHARS = 32
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def topic_for(collapse_id: str) -> str:
    """RFC 8030 `Topic`: at most 32 URL-safe base64 characters; other collapse ids are hashed to fit."""
    if _TOPIC.match(collapse_id):
        return collapse_id
    return b64url_encode(hashlib.sha256(collapse_id.encode()).digest())[:MAX_TOPIC_CHARS]
