"""Errors the push layer raises to its callers.

    PushError
    ├── PushNotConfigured   the namespace has no provider (ABI NOT_CONFIGURED, HTTP 503)
    ├── PushUnavailable     the store or an internal part failed (ABI UNAVAILABLE, HTTP 503)
    ├── SendConflict        the idempotency key names a different message (ABI INVAL, HTTP 409)
    └── QueueFull           the namespace's queued deliveries are at max_queued (ABI RATE_LIMITED, HTTP 429)
"""

from __future__ import annotations

__all__ = ["PushError", "PushNotConfigured", "PushUnavailable", "QueueFull", "SendConflict"]


class PushError(Exception):
    """Base class for failures of a whole send (as opposed to one device's failure, which is reported)."""


class PushNotConfigured(PushError):
    def __init__(self, namespace: str) -> None:
        super().__init__(
            f"push is not configured for namespace {namespace!r}: set a provider's credentials with "
            f"`wasmhost credentials set --namespace {namespace} PROVIDER --json DOC` or "
            "PUT /v1/namespace/push-credentials/{provider} (or PUT /v1/push/config)"
        )
        self.namespace = namespace


class PushUnavailable(PushError):
    """The send could not be attempted; the text is safe to show (no secrets, no tokens)."""


class SendConflict(PushError):
    """The idempotency key (``message_id`` or ``Idempotency-Key``) already names a different message."""


class QueueFull(PushError):
    """The namespace has as many deliveries queued as it may (``max_queued``)."""
