"""Store interfaces. Backends (SQLite, PostgreSQL) implement all of them; callers depend on the
small protocol they need, the way httpx callers depend only on a transport."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .activity import ActivityStore

__all__ = [
    "DEFAULT_MAX_DEVICES_PER_USER",
    "ApiKey",
    "ApiKeyStore",
    "AuthSettingsStore",
    "CredentialStore",
    "Device",
    "DeviceStore",
    "FunctionRecord",
    "FunctionStore",
    "NamespaceStore",
    "NotFound",
    "OutboxRecord",
    "OutboxStore",
    "PushConfig",
    "PushConfigStore",
    "Store",
    "StoreError",
    "TooManyDevices",
]


class StoreError(Exception):
    """The store failed (I/O, corrupt row, bad key). Text is safe to show: no secrets."""


class NotFound(StoreError):
    """The object does not exist in this namespace (another namespace's object is also NotFound)."""


#: Devices one user may have in one namespace, unless the operator says otherwise: each send fans out
#: to all of them, so without a cap one user could turn one send into thousands of deliveries.
DEFAULT_MAX_DEVICES_PER_USER = 32


class TooManyDevices(StoreError):
    """A registration would give the user more than ``max_devices_per_user`` devices (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class PushConfig:
    """The seed's flat per-namespace fields; secrets decrypted. Empty string = unset."""

    namespace: str
    ntfy_base_url: str = ""
    ntfy_auth_token: str = ""
    expo_access_token: str = ""
    updated_at: float = 0.0

    def is_empty(self) -> bool:
        return not (self.ntfy_base_url or self.expo_access_token)

    def redacted(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "ntfy_base_url": self.ntfy_base_url,
            "has_ntfy_auth_token": bool(self.ntfy_auth_token),
            "has_expo_access_token": bool(self.expo_access_token),
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device. `token` is filled only by `list_user_devices(with_tokens=True)`."""

    id: str
    namespace: str
    user_id: str
    device_id: str
    provider: str
    platform: str
    app_version: str
    created_at: float
    updated_at: float
    token: str = ""

    def public(self) -> dict[str, Any]:
        """The listing shape: never the token."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "user_id": self.user_id,
            "provider": self.provider,
            "platform": self.platform,
            "app_version": self.app_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    namespace: str
    user_id: str
    device_id: str
    message: dict[str, Any]
    delivered_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user_id,
            "device_id": self.device_id,
            "message": self.message,
            "time": self.delivered_at,
        }


@dataclass(frozen=True, slots=True)
class FunctionRecord:
    namespace: str
    name: str
    sha256: str
    size: int
    limits: dict[str, Any]
    created_at: float
    updated_at: float
    module: bytes = b""


class NamespaceStore(Protocol):
    async def create_namespace(self, name: str) -> None: ...
    async def namespace_exists(self, name: str) -> bool: ...
    async def list_namespaces(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    namespace: str
    created_at: float


class ApiKeyStore(Protocol):
    """Namespace admin keys, stored only as a hash (the caller hashes; the store never sees the key)."""

    async def add_api_key(self, namespace: str, key_id: str, key_hash: str) -> ApiKey: ...
    async def find_api_key(self, key_hash: str) -> ApiKey | None: ...
    async def list_api_keys(self, namespace: str) -> list[ApiKey]: ...
    async def revoke_api_key(self, namespace: str, key_id: str) -> None: ...


class AuthSettingsStore(Protocol):
    """How a namespace's end-user JWTs are verified (alg, key, issuer, audience); sealed at rest."""

    async def get_auth_settings(self, namespace: str) -> dict[str, Any] | None: ...
    async def put_auth_settings(self, namespace: str, settings: Mapping[str, Any]) -> None: ...
    async def delete_auth_settings(self, namespace: str) -> None: ...


class PushConfigStore(Protocol):
    async def get_push_config(self, namespace: str) -> PushConfig | None: ...
    async def put_push_config(self, config: PushConfig) -> PushConfig: ...
    async def delete_push_config(self, namespace: str) -> None: ...


class CredentialStore(Protocol):
    async def get_credentials(self, namespace: str, provider: str) -> dict[str, Any] | None: ...
    async def all_credentials(self, namespace: str) -> Mapping[str, dict[str, Any]]: ...
    async def put_credentials(self, namespace: str, provider: str, document: Mapping[str, Any]) -> None: ...
    async def delete_credentials(self, namespace: str, provider: str) -> None: ...


class DeviceStore(Protocol):
    #: A registration of a new device (not a device id or token the user already has) beyond this
    #: many raises `TooManyDevices`; checked in the registration's transaction.
    max_devices_per_user: int

    async def register_device(
        self,
        namespace: str,
        user_id: str,
        device_id: str,
        provider: str,
        token: str,
        platform: str = "",
        app_version: str = "",
    ) -> Device:
        """Upsert on (namespace, user, device_id); the token then belongs to this row alone."""
        ...

    async def list_user_devices(self, namespace: str, user_id: str, with_tokens: bool = False) -> list[Device]: ...
    async def delete_device(self, namespace: str, device_row_id: str, user_id: str | None = None) -> None:
        """Delete one device; `NotFound` unless it is in `namespace` (and owned by `user_id`, if given)."""
        ...

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        """Remove a dead device unless it was re-registered at or after `registered_before`."""
        ...


class OutboxStore(Protocol):
    async def record_delivery(self, namespace: str, user_id: str, device_id: str, message: dict[str, Any]) -> None: ...
    async def record_deliveries(self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Record ``(user_id, device_id, message)`` rows in one transaction: all are committed or none."""
        ...
    def outbox_steps(
        self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> Sequence[tuple[str, Sequence[Sequence[Any]]]]:
        """The statements that record the rows, for a caller that commits them in its own transaction."""
        ...
    async def list_deliveries(self, namespace: str, limit: int = 1000) -> list[OutboxRecord]: ...


class FunctionStore(Protocol):
    async def put_function(
        self, namespace: str, name: str, module: bytes, limits: Mapping[str, Any]
    ) -> FunctionRecord: ...
    async def get_function(self, namespace: str, name: str, with_module: bool = True) -> FunctionRecord: ...
    async def list_functions(self, namespace: str) -> list[FunctionRecord]: ...
    async def delete_function(self, namespace: str, name: str) -> None: ...


class Store(
    NamespaceStore, ApiKeyStore, AuthSettingsStore, PushConfigStore, CredentialStore, DeviceStore, OutboxStore,
    FunctionStore, ActivityStore, Protocol,
):
    """Everything a backend provides, plus its lifecycle."""

    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...
