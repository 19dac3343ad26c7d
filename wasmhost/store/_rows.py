"""Row-to-record mapping, sealing purposes and contexts, and unsealing, for the SQL store and key rotation.

What a row means, and which purpose and context each secret is sealed under, lives here once. No SQL here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from .base import Device, FunctionRecord, OutboxRecord, PushConfig, StoreError, TooManyDevices
from .sealing import KeyRing, SealError

__all__ = [
    "check_device_cap",
    "require_device_fields",
    "AUTH",
    "CONFIG",
    "CONFIG_EXPO_TOKEN",
    "CONFIG_NTFY_TOKEN",
    "CREDENTIALS",
    "DEVICE_COLUMNS",
    "FINGERPRINT_KEY",
    "TOKENS",
    "credentials_context",
    "device_context",
    "devices_from_rows",
    "function_from_row",
    "open_fingerprint_key",
    "open_json",
    "open_text",
    "outbox_from_row",
    "push_config_from_row",
]

# Purposes of the keys derived from the master key (see sealing.py).
TOKENS = "device-tokens"
CREDENTIALS = "push-credentials"
CONFIG = "push-config"
#: Each sealed push-config column has its own purpose, so a value moved to the other column does not open.
CONFIG_NTFY_TOKEN = CONFIG + "/ntfy-auth-token"
CONFIG_EXPO_TOKEN = CONFIG + "/expo-access-token"
FINGERPRINT_KEY = "fingerprint-key"
AUTH = "namespace-auth"

#: The columns `devices_from_rows` reads, in its order.
DEVICE_COLUMNS = "id, namespace, user_id, device_id, provider, platform, app_version, created_at, updated_at"

Row = Sequence[Any]


def credentials_context(namespace: str, provider: str) -> str:
    """The sealing context of one provider's credentials document: it opens for this row only."""
    return f"{namespace}\x00{provider}"


def require_device_fields(user_id: str, device_id: str, provider: str, token: str) -> None:
    """A registration names its user, device, provider and token; every backend refuses it otherwise."""
    for label, value in (("user_id", user_id), ("device_id", device_id), ("provider", provider), ("token", token)):
        if not value:
            raise ValueError(f"{label} is required")


def check_device_cap(others: int, cap: int) -> None:
    """Refuse a new device when the user already has `others` devices (not counting rows the
    registration replaces) and the cap is `cap`."""
    if others >= cap:
        raise TooManyDevices(
            f"this user already has {others} devices; the limit is {cap} per user"
            " (WASMHOST_MAX_DEVICES_PER_USER): remove one first"
        )


def device_context(namespace: str, row_id: str) -> str:
    """The sealing context of one device's token."""
    return f"{namespace}\x00{row_id}"


def open_text(keyring: KeyRing, sealed: str, purpose: str, context: str) -> str:
    """Unseal; a value that does not open is a `StoreError` (its text names no secret)."""
    try:
        return keyring.open(sealed, purpose, context).decode()
    except SealError as exc:
        raise StoreError(str(exc)) from None


def open_json(keyring: KeyRing, sealed: str, purpose: str, context: str) -> Any:
    return json.loads(open_text(keyring, sealed, purpose, context))


def open_fingerprint_key(keyring: KeyRing, sealed: str) -> bytes:
    try:
        return keyring.open(sealed, FINGERPRINT_KEY)
    except SealError as exc:
        raise StoreError(f"cannot open the fingerprint key: {exc} (is this the right master key?)") from None


def push_config_from_row(keyring: KeyRing, namespace: str, row: Row) -> PushConfig:
    """From ``ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed, updated_at``."""
    return PushConfig(
        namespace=namespace,
        ntfy_base_url=row[0],
        ntfy_auth_token=open_text(keyring, row[1], CONFIG_NTFY_TOKEN, namespace) if row[1] else "",
        expo_access_token=open_text(keyring, row[2], CONFIG_EXPO_TOKEN, namespace) if row[2] else "",
        updated_at=row[3],
    )


def devices_from_rows(keyring: KeyRing, namespace: str, rows: Iterable[Row], with_tokens: bool) -> list[Device]:
    """From the device columns, plus ``token_sealed`` as the tenth when `with_tokens`."""
    devices = []
    for r in rows:
        token = open_text(keyring, r[9], TOKENS, device_context(namespace, r[0])) if with_tokens else ""
        devices.append(Device(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], token))
    return devices


def outbox_rows(namespace: str, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """INSERT parameters ``(namespace, user_id, device_id, message_json, delivered_at)`` for
    `record_deliveries`; a fan-out repeats one message, so each distinct message is encoded once."""
    now = time.time()
    encoded: dict[int, str] = {}
    params = []
    for user, device, message in rows:
        text = encoded.get(id(message))
        if text is None:
            text = encoded[id(message)] = json.dumps(message, ensure_ascii=False)
        params.append((namespace, user, device, text, now))
    return params


def outbox_from_row(r: Row) -> OutboxRecord:
    """From ``id, namespace, user_id, device_id, message_json, delivered_at``."""
    return OutboxRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5])


def function_from_row(r: Row) -> FunctionRecord:
    """From ``namespace, name, sha256, size, limits_json, created_at, updated_at`` and optionally ``module``."""
    module = bytes(r[7] or b"") if len(r) > 7 else b""
    return FunctionRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], module)
