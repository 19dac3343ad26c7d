"""The send's stable collapse key: what makes a delivery repeated after a crash show once on the device.

Delivery is at least once: a process that dies after a push service accepted a message and before the
result was committed leaves the row leased, and it is delivered again after the lease (see
`push.delivery`). The push services' collapse fields (APNs ``apns-collapse-id``, Web Push ``Topic``, FCM's
APNs and Web Push blocks, Android's notification ``tag``) replace an earlier message with the same id, so
every attempt of one send carries the same id: derived from the send's idempotency key when it has one,
else from its durable send id — both read back from the store by whichever process retries it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from .message import PushMessage

__all__ = ["SEND_KEY_CHARS", "send_key", "with_send_key"]

#: Fits every service: Web Push's Topic allows 32 URL-safe base64 characters, APNs 64 bytes.
SEND_KEY_CHARS = 32


def send_key(namespace: str, idempotency_key: str, send_id: str) -> str:
    """32 URL-safe base64 characters (192 bits of SHA-256), whatever the key's length or characters.

    The namespace is part of the hashed identity: two namespaces sending through one app with the same key
    must not collapse into each other. The key is hashed, so it never reaches the push service as such."""
    basis = f"key\0{namespace}\0{idempotency_key}" if idempotency_key else f"send\0{send_id}"
    digest = hashlib.sha256(basis.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:SEND_KEY_CHARS]


def with_send_key(message: PushMessage, namespace: str, idempotency_key: str, send_id: str) -> PushMessage:
    """`message` carrying its send's key (the tenant's ``message_id``, if any, still wins as collapse id)."""
    return dataclasses.replace(message, send_key=send_key(namespace, idempotency_key, send_id))
