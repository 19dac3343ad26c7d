"""The one SQL store: every statement and every sealing context, written once, over a `Driver`.

`SQLiteStore` and `PostgresStore` are this class with their engine's driver; what differs between
engines (placeholders, locking, announcements, the SQLite send-path fast path) lives in the drivers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cachetools import TTLCache

from ._rows import (
    AUTH,
    CONFIG_EXPO_TOKEN,
    CONFIG_NTFY_TOKEN,
    CREDENTIALS,
    DEVICE_COLUMNS,
    FINGERPRINT_KEY,
    TOKENS,
    check_device_cap,
    credentials_context,
    device_context,
    devices_from_rows,
    function_from_row,
    open_fingerprint_key,
    open_json,
    outbox_from_row,
    outbox_rows,
    push_config_from_row,
    require_device_fields,
)
from .activity import SQLActivity
from .base import (
    DEFAULT_MAX_DEVICES_PER_USER,
    ApiKey,
    Device,
    FunctionRecord,
    NotFound,
    OutboxRecord,
    PushConfig,
    StoreError,
)
from .changes import Change, LocalChangeFeed
from .driver import Driver, IntegrityError
from .migrations import MIGRATIONS, render
from .queue import QueueStatements
from .rotation import SealedColumn, SealedRow, page_sql, swap_sql
from .sealing import KeyRing, fingerprint
from .webhooks import WebhookStatements

__all__ = ["SQLStore"]

#: Lock key held while migrating (any constant unique to wasmhost; "wasmhost" in ASCII).
MIGRATION_LOCK = 0x7761736D686F7374
#: Users whose device lists are kept between sends, when the driver can tell a cache is current.
DEVICE_CACHE_USERS = 10_000
#: How long a kept device list may be used: the bound for writes the change counter cannot see (another
#: program than wasmhost editing the database file).
DEVICE_CACHE_SECONDS = 30.0

OUTBOX_INSERT = (
    "INSERT INTO outbox (namespace, user_id, device_id, message_json, delivered_at) VALUES (?, ?, ?, ?, ?)"
)
_FUNCTION_COLUMNS = "namespace, name, sha256, size, limits_json, created_at, updated_at"


def token_lock_key(fp: str) -> int:
    """A signed 64-bit lock key from a (hex) token fingerprint, which already binds the namespace."""
    return int.from_bytes(bytes.fromhex(fp[:16]), "big", signed=True)


def user_lock_key(namespace: str, user_id: str) -> int:
    """A signed 64-bit lock key for one user's device list (registrations count it, then add to it)."""
    digest = hashlib.sha256(f"devices\x00{namespace}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _namespace_missing(namespace: str) -> NotFound:
    return NotFound(f"namespace {namespace!r} not found")


class SQLStore(SQLActivity, WebhookStatements, QueueStatements):
    """Implements every protocol in `store.base`. Secrets are sealed with the key ring."""

    def __init__(self, driver: Driver, keyring: KeyRing) -> None:
        self.driver = driver
        self.keyring = keyring
        self.max_devices_per_user = DEFAULT_MAX_DEVICES_PER_USER
        self._fp_key = b""
        #: (namespace, user, with tokens) -> devices, valid while `_devices_version` is current.
        self._devices: TTLCache[tuple[str, str, bool], tuple[Device, ...]] = TTLCache(
            maxsize=DEVICE_CACHE_USERS, ttl=DEVICE_CACHE_SECONDS
        )
        self._devices_version: int | None = None
        #: A counter that moves (synchronously, right after the commit) whenever any process sharing this
        #: store announces a change to a device: the SQLite change ring's (`relay.ChangeRelay.device_sequence`).
        #: When set, the device cache follows it instead of the driver's `cache_version`.
        self.device_counter: Callable[[], int] | None = None

    @property
    def dialect(self) -> str:
        return self.driver.dialect

    @property
    def changes(self) -> LocalChangeFeed:
        return self.driver.changes

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Any:
        await self.driver.open()
        try:
            await self._migrate()
            self._fp_key = await self._fingerprint_key()
            await self.driver.started()
        except BaseException:
            await self.aclose()  # e.g. the wrong master key: do not leak connections or threads
            raise
        return self

    async def aclose(self) -> None:
        await self.driver.aclose()

    async def __aenter__(self) -> Any:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ping(self) -> None:
        await self.driver.fetch("SELECT 1")

    async def _migrate(self) -> None:
        """Each migration in its own transaction under one lock, so gateways starting together take turns
        and each finds the schema current."""
        async with self.driver.transaction() as tx:
            await tx.lock(MIGRATION_LOCK)
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for migration in MIGRATIONS:
            async with self.driver.transaction() as tx:
                await tx.lock(MIGRATION_LOCK)
                [(current,)] = await tx.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                if migration.version <= current:
                    continue
                for statement in render(migration, self.dialect):
                    await tx.execute(statement)
                await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))

    async def _fingerprint_key(self) -> bytes:
        """The token-fingerprint key lives sealed in the store (created once by whichever gateway gets
        there first), so key rotation never changes fingerprints."""
        await self.driver.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (FINGERPRINT_KEY, self.keyring.seal(os.urandom(32), FINGERPRINT_KEY)),
        )
        [(sealed,)] = await self.driver.fetch("SELECT value FROM meta WHERE key = ?", (FINGERPRINT_KEY,))
        return open_fingerprint_key(self.keyring, sealed)

    async def _upsert(self, sql: str, params: Sequence[Any], change: Change) -> None:
        """A write into a namespace's table; a missing namespace is `NotFound`."""
        try:
            await self.driver.execute(sql, params, change)
        except IntegrityError as exc:
            if exc.kind == "foreign_key":
                raise _namespace_missing(change.namespace) from None
            raise

    # -- namespaces --------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        written = await self.driver.execute(
            "INSERT INTO namespaces (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, time.time()),
        )
        if not written:
            raise StoreError(f"namespace {name!r} already exists")

    async def namespace_exists(self, name: str) -> bool:
        return bool(await self.driver.fetch("SELECT 1 FROM namespaces WHERE name = ?", (name,), quick=True))

    async def list_namespaces(self) -> list[str]:
        return [r[0] for r in await self.driver.fetch("SELECT name FROM namespaces ORDER BY name")]

    # -- API keys and end-user auth settings --------------------------------------------------

    async def add_api_key(self, namespace: str, key_id: str, key_hash: str) -> ApiKey:
        now = time.time()
        try:
            await self.driver.execute(
                "INSERT INTO api_keys (id, namespace, key_hash, created_at) VALUES (?, ?, ?, ?)",
                (key_id, namespace, key_hash, now), Change(namespace, "api_key", key_id),
            )
        except IntegrityError as exc:
            if exc.kind == "foreign_key":
                raise _namespace_missing(namespace) from None
            raise StoreError("API key id or hash already exists") from None
        return ApiKey(key_id, namespace, now)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        rows = await self.driver.fetch(
            "SELECT id, namespace, created_at FROM api_keys WHERE key_hash = ?", (key_hash,), quick=True
        )
        return ApiKey(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def list_api_keys(self, namespace: str) -> list[ApiKey]:
        rows = await self.driver.fetch(
            "SELECT id, namespace, created_at FROM api_keys WHERE namespace = ? ORDER BY created_at, id", (namespace,)
        )
        return [ApiKey(r[0], r[1], r[2]) for r in rows]

    async def revoke_api_key(self, namespace: str, key_id: str) -> None:
        if not await self.driver.execute("DELETE FROM api_keys WHERE namespace = ? AND id = ?", (namespace, key_id),
                                         Change(namespace, "api_key", key_id)):
            raise NotFound("API key not found")

    async def get_auth_settings(self, namespace: str) -> dict[str, Any] | None:
        rows = await self.driver.fetch(
            "SELECT settings_sealed FROM namespace_auth WHERE namespace = ?", (namespace,), quick=True
        )
        return open_json(self.keyring, rows[0][0], AUTH, namespace) if rows else None

    async def put_auth_settings(self, namespace: str, settings: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(settings)).encode(), AUTH, namespace)
        await self._upsert(
            "INSERT INTO namespace_auth (namespace, settings_sealed, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (namespace) DO UPDATE SET settings_sealed = excluded.settings_sealed,"
            " updated_at = excluded.updated_at",
            (namespace, sealed, time.time()), Change(namespace, "auth"),
        )

    async def delete_auth_settings(self, namespace: str) -> None:
        await self.driver.execute("DELETE FROM namespace_auth WHERE namespace = ?", (namespace,),
                                  Change(namespace, "auth"))

    # -- push config -------------------------------------------------------------------------

    async def get_push_config(self, namespace: str) -> PushConfig | None:
        rows = await self.driver.fetch(
            "SELECT ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed, updated_at"
            " FROM push_config WHERE namespace = ?", (namespace,), quick=True,
        )
        return push_config_from_row(self.keyring, namespace, rows[0]) if rows else None

    async def put_push_config(self, config: PushConfig) -> PushConfig:
        ns = config.namespace
        now = time.time()
        seal = self.keyring.seal
        await self._upsert(
            "INSERT INTO push_config (namespace, ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed,"
            " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET"
            " ntfy_base_url = excluded.ntfy_base_url, ntfy_auth_token_sealed = excluded.ntfy_auth_token_sealed,"
            " expo_access_token_sealed = excluded.expo_access_token_sealed, updated_at = excluded.updated_at",
            (ns, config.ntfy_base_url,
             seal(config.ntfy_auth_token.encode(), CONFIG_NTFY_TOKEN, ns) if config.ntfy_auth_token else "",
             seal(config.expo_access_token.encode(), CONFIG_EXPO_TOKEN, ns) if config.expo_access_token else "",
             now),
            Change(ns, "push_config"),
        )
        return PushConfig(ns, config.ntfy_base_url, config.ntfy_auth_token, config.expo_access_token, now)

    async def delete_push_config(self, namespace: str) -> None:
        await self.driver.execute("DELETE FROM push_config WHERE namespace = ?", (namespace,),
                                  Change(namespace, "push_config"))

    # -- credentials -------------------------------------------------------------------------

    async def get_credentials(self, namespace: str, provider: str) -> dict[str, Any] | None:
        rows = await self.driver.fetch(
            "SELECT document_sealed FROM push_credentials WHERE namespace = ? AND provider = ?",
            (namespace, provider), quick=True,
        )
        if not rows:
            return None
        return open_json(self.keyring, rows[0][0], CREDENTIALS, credentials_context(namespace, provider))

    async def all_credentials(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows = await self.driver.fetch(
            "SELECT provider, document_sealed FROM push_credentials WHERE namespace = ? ORDER BY provider",
            (namespace,), quick=True,
        )
        return {r[0]: open_json(self.keyring, r[1], CREDENTIALS, credentials_context(namespace, r[0])) for r in rows}

    async def credentials_updated_at(self, namespace: str) -> dict[str, float]:
        rows = await self.driver.fetch(
            "SELECT provider, updated_at FROM push_credentials WHERE namespace = ?", (namespace,)
        )
        return {r[0]: r[1] for r in rows}

    async def put_credentials(self, namespace: str, provider: str, document: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(document)).encode(), CREDENTIALS,
                                   credentials_context(namespace, provider))
        await self._upsert(
            "INSERT INTO push_credentials (namespace, provider, document_sealed, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (namespace, provider) DO UPDATE SET document_sealed = excluded.document_sealed,"
            " updated_at = excluded.updated_at",
            (namespace, provider, sealed, time.time()), Change(namespace, "credentials", provider),
        )

    async def delete_credentials(self, namespace: str, provider: str) -> None:
        await self.driver.execute("DELETE FROM push_credentials WHERE namespace = ? AND provider = ?",
                                  (namespace, provider), Change(namespace, "credentials", provider))

    # -- devices -----------------------------------------------------------------------------

    def token_fingerprint(self, namespace: str, token: str) -> str:
        return fingerprint(self._fp_key, namespace, token)

    def _seal_token(self, namespace: str, row_id: str, token: str) -> str:
        return self.keyring.seal(token.encode(), TOKENS, device_context(namespace, row_id))

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
        require_device_fields(user_id, device_id, provider, token)
        now = time.time()
        fp = self.token_fingerprint(namespace, token)
        try:
            async with self.driver.transaction() as tx:
                # Registrations of the same physical token take turns here, so each one's DELETE below sees
                # the other's committed row: exactly one owner, whatever the interleaving.
                # The user's registrations take turns too (first, so locks are always taken in one
                # order), so two cannot both count one slot left and both take it.
                await tx.lock(user_lock_key(namespace, user_id))
                await tx.lock(token_lock_key(fp))
                existing = await tx.fetch(
                    "SELECT id, created_at FROM devices WHERE namespace = ? AND user_id = ? AND device_id = ?"
                    + tx.for_update, (namespace, user_id, device_id),
                )
                if not existing:  # a new device, unless it carries a token the user has (that row goes)
                    [(others,)] = await tx.fetch(
                        "SELECT COUNT(*) FROM devices WHERE namespace = ? AND user_id = ? AND token_fp != ?",
                        (namespace, user_id, fp),
                    )
                    check_device_cap(others, self.max_devices_per_user)
                row_id, created = (existing[0][0], existing[0][1]) if existing else (str(uuid.uuid4()), now)
                [got] = await tx.fetch(
                    "INSERT INTO devices (id, namespace, user_id, device_id, provider, token_sealed, token_fp,"
                    " platform, app_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (namespace, user_id, device_id) DO UPDATE SET provider = excluded.provider,"
                    " token_sealed = excluded.token_sealed, token_fp = excluded.token_fp,"
                    " platform = excluded.platform, app_version = excluded.app_version,"
                    " updated_at = excluded.updated_at RETURNING id, created_at",
                    (row_id, namespace, user_id, device_id, provider, self._seal_token(namespace, row_id, token), fp,
                     platform, app_version, created, now),
                )
                if got[0] != row_id:  # a concurrent first registration of this device won the insert
                    row_id, created = got[0], got[1]
                    await tx.execute("UPDATE devices SET token_sealed = ? WHERE id = ?",
                                     (self._seal_token(namespace, row_id, token), row_id))
                # One physical token belongs to one user per namespace: the newest registration keeps it.
                await tx.execute("DELETE FROM devices WHERE namespace = ? AND token_fp = ? AND id != ?",
                                 (namespace, fp, row_id))
                tx.announce(Change(namespace, "device", row_id))
        except IntegrityError as exc:
            if exc.kind == "foreign_key":
                raise _namespace_missing(namespace) from None
            raise StoreError("device registration failed") from None
        return Device(row_id, namespace, user_id, device_id, provider, platform, app_version, created, now)

    async def list_user_devices(self, namespace: str, user_id: str, with_tokens: bool = False) -> list[Device]:
        # Every send reads this. Where it can be told that nobody has changed a device since — the device
        # counter of the change ring every process sharing a SQLite file writes to, else SQLite's
        # `data_version` — the answer is kept until someone does: exact, and it skips a query plus a
        # decryption per device. The ring is preferred: `PRAGMA data_version` starts a read transaction,
        # which waits (sleeping, on the loop) while another connection rewrites the WAL index, and it
        # moves on every commit, sends included.
        version = self.device_counter() if self.device_counter is not None else self.driver.cache_version()
        if version is not None:
            if version != self._devices_version:
                self._devices.clear()
                self._devices_version = version
            cached = self._devices.get((namespace, user_id, with_tokens))
            if cached is not None:
                return list(cached)
        columns = DEVICE_COLUMNS + (", token_sealed" if with_tokens else "")
        rows = await self.driver.fetch(
            f"SELECT {columns} FROM devices WHERE namespace = ? AND user_id = ? ORDER BY created_at, id",
            (namespace, user_id), quick=True,
        )
        devices = devices_from_rows(self.keyring, namespace, rows, with_tokens)
        if version is not None and self._devices_version == version:
            self._devices[(namespace, user_id, with_tokens)] = tuple(devices)
        return devices

    async def devices_by_row_ids(self, namespace: str, row_ids: Sequence[str]) -> list[Device]:
        """The devices (with tokens) of these row ids that still exist in `namespace`."""
        if not row_ids:
            return []
        rows = await self.driver.fetch(
            f"SELECT {DEVICE_COLUMNS}, token_sealed FROM devices WHERE namespace = ?"
            f" AND id IN ({', '.join('?' * len(row_ids))})", (namespace, *row_ids), quick=True,
        )
        return devices_from_rows(self.keyring, namespace, rows, True)

    async def delete_device(self, namespace: str, device_row_id: str, user_id: str | None = None) -> None:
        change = Change(namespace, "device", device_row_id)
        if user_id is None:
            count = await self.driver.execute("DELETE FROM devices WHERE id = ? AND namespace = ?",
                                              (device_row_id, namespace), change)
        else:
            count = await self.driver.execute("DELETE FROM devices WHERE id = ? AND namespace = ? AND user_id = ?",
                                              (device_row_id, namespace, user_id), change)
        if count == 0:
            raise NotFound("device not found")

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        change = Change(namespace, "device", device_row_id)
        if registered_before is None:
            count = await self.driver.execute("DELETE FROM devices WHERE id = ? AND namespace = ?",
                                              (device_row_id, namespace), change)
        else:
            count = await self.driver.execute(
                "DELETE FROM devices WHERE id = ? AND namespace = ? AND updated_at < ?",
                (device_row_id, namespace, registered_before), change,
            )
        return count > 0

    # -- outbox ------------------------------------------------------------------------------

    async def record_delivery(self, namespace: str, user_id: str, device_id: str, message: dict[str, Any]) -> None:
        await self.record_deliveries(namespace, [(user_id, device_id, message)])

    async def record_deliveries(self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """One transaction, committed when this returns. Raises `StoreError` on failure."""
        params = outbox_rows(namespace, rows)
        if not params:
            return
        try:
            # Unflushed: the delivery's row keeps its lease until its outcome is recorded after this, so a
            # record lost in a database crash is delivered again (a duplicate at worst), never lost.
            await self.driver.commit_now([(OUTBOX_INSERT, params)], flush=False)
        except StoreError as exc:
            raise StoreError(f"outbox write failed: {exc}") from None

    def outbox_steps(
        self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> list[tuple[str, Sequence[Sequence[Any]]]]:
        params = outbox_rows(namespace, rows)
        return [(OUTBOX_INSERT, params)] if params else []

    async def list_deliveries(self, namespace: str, limit: int = 1000) -> list[OutboxRecord]:
        rows = await self.driver.fetch(
            "SELECT id, namespace, user_id, device_id, message_json, delivered_at FROM outbox WHERE namespace = ?"
            " ORDER BY id LIMIT ?", (namespace, limit),
        )
        return [outbox_from_row(r) for r in rows]

    # -- functions ---------------------------------------------------------------------------

    async def put_function(self, namespace: str, name: str, module: bytes, limits: Mapping[str, Any]) -> FunctionRecord:
        now = time.time()
        digest = hashlib.sha256(module).hexdigest()
        await self._upsert(
            "INSERT INTO functions (namespace, name, sha256, size, module, limits_json, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name) DO UPDATE SET sha256 = excluded.sha256,"
            " size = excluded.size, module = excluded.module, limits_json = excluded.limits_json,"
            " updated_at = excluded.updated_at",
            (namespace, name, digest, len(module), bytes(module), json.dumps(dict(limits)), now, now),
            Change(namespace, "function", name),
        )
        return await self.get_function(namespace, name, with_module=False)

    async def get_function(self, namespace: str, name: str, with_module: bool = True) -> FunctionRecord:
        columns = _FUNCTION_COLUMNS + (", module" if with_module else "")
        rows = await self.driver.fetch(
            f"SELECT {columns} FROM functions WHERE namespace = ? AND name = ?", (namespace, name),
            quick=not with_module,
        )
        if not rows:
            raise NotFound(f"function {name!r} not found")
        return function_from_row(rows[0])

    async def list_functions(self, namespace: str) -> list[FunctionRecord]:
        rows = await self.driver.fetch(
            f"SELECT {_FUNCTION_COLUMNS} FROM functions WHERE namespace = ? ORDER BY name", (namespace,), quick=True
        )
        return [function_from_row(r) for r in rows]

    async def delete_function(self, namespace: str, name: str) -> None:
        if not await self.driver.execute("DELETE FROM functions WHERE namespace = ? AND name = ?", (namespace, name),
                                         Change(namespace, "function", name)):
            raise NotFound(f"function {name!r} not found")

    # -- key rotation (see rotation.py) ------------------------------------------------------

    async def sealed_page(self, column: SealedColumn, after: tuple[str, ...] | None, limit: int) -> list[SealedRow]:
        sql, args = page_sql(column, after, limit)
        return [column.row(tuple(r)) for r in await self.driver.fetch(sql, args)]

    async def swap_sealed(self, column: SealedColumn, swaps: Sequence[tuple[tuple[str, ...], str, str]]) -> int:
        sql = swap_sql(column)
        done = 0
        async with self.driver.transaction() as tx:
            for key, old, new in swaps:
                done += await tx.execute(sql, (new, old, *key))
        return done
