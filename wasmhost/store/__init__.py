"""State: namespaces, push config and credentials, devices, outbox and functions, sealed at rest."""

from .base import (
    ApiKey,
    ApiKeyStore,
    AuthSettingsStore,
    CredentialStore,
    Device,
    DeviceStore,
    FunctionRecord,
    FunctionStore,
    NamespaceStore,
    NotFound,
    OutboxRecord,
    OutboxStore,
    PushConfig,
    PushConfigStore,
    Store,
    StoreError,
)
from .sealing import KeyRing, SealError, load_keyring, parse_keyring
from .sqlite import SQLiteStore
from .url import DEFAULT_DB_URL, open_store, state_dir_for

__all__ = [
    "ApiKey",
    "ApiKeyStore",
    "AuthSettingsStore",
    "DEFAULT_DB_URL",
    "CredentialStore",
    "Device",
    "DeviceStore",
    "FunctionRecord",
    "FunctionStore",
    "KeyRing",
    "NamespaceStore",
    "NotFound",
    "OutboxRecord",
    "OutboxStore",
    "PushConfig",
    "PushConfigStore",
    "SQLiteStore",
    "SealError",
    "Store",
    "StoreError",
    "load_keyring",
    "open_store",
    "parse_keyring",
    "state_dir_for",
]
