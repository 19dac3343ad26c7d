"""State: namespaces, push config and credentials, devices, outbox and functions, sealed at rest."""

from .base import (
    DEFAULT_MAX_DEVICES_PER_USER,
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
    TooManyDevices,
)
from .changes import Change, ChangeFeed, HasChangeFeed, LocalChangeFeed
from .relay import ChangeRelay
from .rotation import RotationReport, rotate_keys
from .sealing import KeyRing, SealError, load_keyring, parse_keyring
from .sqlite import SQLiteStore
from .url import DEFAULT_DB_URL, open_store, state_dir_for

__all__ = [
    "ChangeRelay",
    "DEFAULT_MAX_DEVICES_PER_USER",
    "ApiKey",
    "ApiKeyStore",
    "AuthSettingsStore",
    "Change",
    "ChangeFeed",
    "DEFAULT_DB_URL",
    "CredentialStore",
    "Device",
    "DeviceStore",
    "FunctionRecord",
    "FunctionStore",
    "HasChangeFeed",
    "KeyRing",
    "LocalChangeFeed",
    "NamespaceStore",
    "NotFound",
    "OutboxRecord",
    "OutboxStore",
    "PushConfig",
    "PushConfigStore",
    "RotationReport",
    "SQLiteStore",
    "SealError",
    "Store",
    "StoreError",
    "TooManyDevices",
    "load_keyring",
    "open_store",
    "parse_keyring",
    "rotate_keys",
    "state_dir_for",
]
