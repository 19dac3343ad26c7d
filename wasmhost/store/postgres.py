"""The fleet store: PostgreSQL through an asyncpg pool, shared by any number of gateways.

Semantics mirror `SQLiteStore` exactly (same sealing purposes and AAD contexts, same errors). What a
fleet adds: every write announces itself with ``NOTIFY`` in its own transaction (see `PgChangeFeed`),
token exclusivity holds across gateways (a transaction-scoped advisory lock per token fingerprint), and
migrations take an advisory lock so gateways starting together do not race.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .._env import env_int
from ._rows import (
    AUTH,
    CONFIG_EXPO_TOKEN,
    CONFIG_NTFY_TOKEN,
    CREDENTIALS,
    DEVICE_COLUMNS,
    FINGERPRINT_KEY,
    TOKENS,
    credentials_context,
    devices_from_rows,
    function_from_row,
    open_fingerprint_key,
    open_json,
    open_text,
    outbox_from_row,
    outbox_rows,
    push_config_from_row,
    require_device_fields,
)
from .base import ApiKey, Device, FunctionRecord, NotFound, OutboxRecord, PushConfig, StoreError
from .changes import Change, LocalChangeFeed
from .migrations import MIGRATIONS, render
from .rotation import SealedColumn, SealedRow, page_sql, swap_sql
from .sealing import KeyRing, fingerprint

__all__ = ["CHANNEL", "PgChangeFeed", "PostgresStore"]

LOG = logging.getLogger("wasmhost.store")

#: The NOTIFY channel every gateway listens on.
CHANNEL = "wasmhost_changes"
#: Advisory lock key held while migrating (any constant unique to wasmhost).
MIGRATION_LOCK = 0x7761736D686F7374  # "wasmhost"
#: Pool bounds per gateway; override with ``WASMHOST_PG_POOL_MIN`` / ``WASMHOST_PG_POOL_MAX``.
DEFAULT_POOL_MIN = 2
DEFAULT_POOL_MAX = 10
#: Bound on one statement and on opening a connection, in seconds.
COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
#: How often the listener proves its connection is alive when no notification arrives, and how long it waits.
LISTENER_HEALTH_INTERVAL = 5.0
LISTENER_HEALTH_TIMEOUT = 3.0
#: Reconnect backoff of the listener (doubling, jittered), in seconds.
LISTENER_BACKOFF_MIN = 0.05
LISTENER_BACKOFF_MAX = 5.0

_NOTIFY = f"SELECT count(*) FROM (SELECT pg_notify('{CHANNEL}', ${{n}}) FROM w) AS n"


def _announcing(write: str, n: int) -> str:
    """One statement that writes and, only if a row changed, notifies: ``$n`` is the payload.

    Returns the number of rows written. A single statement is its own transaction, so the NOTIFY
    is delivered exactly when the write commits.
    """
    return f"WITH w AS ({write} RETURNING 1) " + _NOTIFY.format(n=n)


def _lock_key(fp: str) -> int:
    """A signed 64-bit advisory-lock key from a (hex) token fingerprint, which already binds the namespace."""
    return int.from_bytes(bytes.fromhex(fp[:16]), "big", signed=True)


def _safe(exc: BaseException) -> StoreError:
    """Database errors become StoreErrors naming the failure, never the row values PostgreSQL may quote."""
    state = getattr(exc, "sqlstate", None)
    return StoreError(f"postgresql: {type(exc).__name__}" + (f" (SQLSTATE {state})" if state else ""))


_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PgChangeFeed(LocalChangeFeed):
    """Changes from every gateway: in-process fan-out plus one dedicated LISTEN connection.

    If the connection drops (server restart, failover, a terminated backend), the feed reconnects with
    jittered backoff and then announces `Change.everything()` once, because notifications sent while it
    was away are lost. Until then the caches' TTL is the bound. `listener_connected`, `reconnects` and
    `disconnects` are read by the gateway's metrics.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        *,
        health_interval: float = LISTENER_HEALTH_INTERVAL,
        health_timeout: float = LISTENER_HEALTH_TIMEOUT,
        backoff_min: float = LISTENER_BACKOFF_MIN,
        backoff_max: float = LISTENER_BACKOFF_MAX,
    ) -> None:
        super().__init__()
        self._connect = connect
        self.origin = uuid.uuid4().hex
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.listener_connected = False
        self.received = 0  # notifications from other processes
        self.disconnects = 0  # listener connections lost
        self.reconnects = 0  # listener connections re-established after a loss (each followed by "everything")
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._deaf = False  # set while not listening after start: caches may have missed changes

    async def start(self) -> None:
        """Connect the listener (once, now) and keep it connected in the background."""
        if self._task is not None:
            return
        try:
            await self._listen()
        except _DB_ERRORS as exc:
            self._deaf = True
            LOG.warning("store: change listener could not connect (%s); retrying in the background",
                        type(exc).__name__)
        self._task = asyncio.create_task(self._supervise(), name="wasmhost-change-listener")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._drop()

    @property
    def pid(self) -> int | None:
        """The listener's server process id (tests terminate it to simulate a dropped connection)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def _listen(self) -> None:
        conn = await self._connect()
        try:
            self._lost = asyncio.Event()
            conn.add_termination_listener(lambda _c: self._lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.listener_connected = True

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.listener_connected = False
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _supervise(self) -> None:
        delay = self.backoff_min
        while True:
            if self._conn is None:
                try:
                    await self._listen()
                except _DB_ERRORS as exc:
                    LOG.warning("store: change listener reconnect failed (%s); next try in %.2fs",
                                type(exc).__name__, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(self.backoff_max, delay * 2)
                    continue
                delay = self.backoff_min
                if self._deaf:
                    self._deaf = False
                    self.reconnects += 1
                    LOG.warning("store: change listener reconnected; invalidating every cache once "
                                "(changes made while it was away were not announced)")
                    self._dispatch(Change.everything())
            await self._watch()
            if self._task is None:  # closing
                return
            self.disconnects += 1
            self._deaf = True
            LOG.warning("store: change listener lost its connection; reconnecting (caches fall back to their TTL)")
            await self._drop()

    async def _watch(self) -> None:
        """Return when the listener connection is gone: closed by the server, or silent past the health check."""
        conn = self._conn
        assert conn is not None
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self.health_interval)
                return
            except TimeoutError:
                pass
            try:
                await conn.fetchval("SELECT 1", timeout=self.health_timeout)
            except _DB_ERRORS:
                return

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            change, origin = Change.from_payload(payload)
        except ValueError:
            LOG.warning("store: ignoring a malformed change notification")
            return
        if origin == self.origin:
            return  # this process already announced it locally, right after its commit
        self.received += 1
        self._dispatch(change)


class PostgresStore:
    """Implements every protocol in `store.base` on PostgreSQL; secrets are sealed with the key ring."""

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        keyring: KeyRing,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        listen: bool = True,
    ) -> None:
        self.url = url
        self.keyring = keyring
        self.min_size = min_size if min_size is not None else env_int("WASMHOST_PG_POOL_MIN", DEFAULT_POOL_MIN)
        self.max_size = max_size if max_size is not None else env_int("WASMHOST_PG_POOL_MAX", DEFAULT_POOL_MAX)
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ValueError("PostgreSQL pool sizes need 0 <= min <= max and max >= 1")
        self._listen = listen
        self._pool: asyncpg.Pool | None = None
        self._fp_key = b""
        self.changes = PgChangeFeed(self._connect_listener)

    # -- lifecycle ---------------------------------------------------------------------------

    def _dsn_and_settings(self, role: str) -> tuple[str, dict[str, str]]:
        """The DSN without an `application_name` query (we set it per role, so a DBA can tell them apart)."""
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        name = query.pop("application_name", "wasmhost")
        dsn = urlunsplit(parts._replace(query=urlencode(query)))
        return dsn, {"application_name": f"{name}-{role}/{os.getpid()}/{self.changes.origin[:8]}"[:63]}

    async def _connect_listener(self) -> asyncpg.Connection:
        dsn, settings = self._dsn_and_settings("listener")
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT, server_settings=settings)

    def _scrub(self, text: str) -> str:
        """Error text about the URL, without its password."""
        try:
            password = urlsplit(self.url).password
        except ValueError:
            password = None
        return text.replace(password, "***") if password else text

    async def open(self) -> PostgresStore:
        try:
            dsn, settings = self._dsn_and_settings("pool")
            self._pool = await asyncpg.create_pool(
                dsn, min_size=self.min_size, max_size=self.max_size, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, server_settings=settings,
            )
        except _DB_ERRORS as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise StoreError(f"cannot connect to PostgreSQL: {detail}") from None
        except ValueError as exc:  # our URL split or asyncpg's DSN parser
            raise StoreError(f"invalid PostgreSQL URL: {self._scrub(str(exc))}") from None
        try:
            await self._migrate()
            self._fp_key = await self._fingerprint_key()
            if self._listen:
                await self.changes.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        await self.changes.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except _DB_ERRORS as exc:
            raise _safe(exc) from None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def _announce(self, sql: str, *args: Any, change: Change) -> int:
        """Run one announcing write (see `_announcing`); publish locally if it changed a row."""
        async with self._conn() as conn:
            count = int(await conn.fetchval(sql, *args, change.to_payload(self.changes.origin)))
        if count:
            self.changes.publish(change)
        return count

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    async def _migrate(self) -> None:
        async with self._conn() as conn:
            # Session-level lock: a second gateway waits here, then finds the schema current.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                for migration in MIGRATIONS:
                    if migration.version <= current:
                        continue
                    async with conn.transaction():
                        for statement in render(migration, self.dialect):
                            await conn.execute(statement)
                        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", migration.version)
                    LOG.info("store: migrated PostgreSQL schema to version %d", migration.version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def _fingerprint_key(self) -> bytes:
        """Stored sealed in `meta` (created once by whichever gateway gets there first), never regenerated."""
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                FINGERPRINT_KEY, self.keyring.seal(os.urandom(32), FINGERPRINT_KEY),
            )
            sealed = await conn.fetchval("SELECT value FROM meta WHERE key = $1", FINGERPRINT_KEY)
        return open_fingerprint_key(self.keyring, sealed)

    def _open(self, sealed: str, purpose: str, context: str) -> str:
        return open_text(self.keyring, sealed, purpose, context)

    # -- namespaces --------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        async with self._conn() as conn:
            status = await conn.execute(
                "INSERT INTO namespaces (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                name, time.time(),
            )
        if status.endswith(" 0"):
            raise StoreError(f"namespace {name!r} already exists")

    async def namespace_exists(self, name: str) -> bool:
        async with self._conn() as conn:
            return await conn.fetchval("SELECT 1 FROM namespaces WHERE name = $1", name) is not None

    async def list_namespaces(self) -> list[str]:
        async with self._conn() as conn:
            return [r[0] for r in await conn.fetch("SELECT name FROM namespaces ORDER BY name")]

    # -- API keys and end-user auth settings --------------------------------------------------

    async def add_api_key(self, namespace: str, key_id: str, key_hash: str) -> ApiKey:
        now = time.time()
        try:
            await self._announce(
                _announcing("INSERT INTO api_keys (id, namespace, key_hash, created_at) VALUES ($1, $2, $3, $4)", 5),
                key_id, namespace, key_hash, now, change=Change(namespace, "api_key", key_id),
            )
        except StoreError as exc:
            if "ForeignKeyViolation" in str(exc):
                raise NotFound(f"namespace {namespace!r} not found") from None
            if "UniqueViolation" in str(exc):
                raise StoreError("API key id or hash already exists") from None
            raise
        return ApiKey(key_id, namespace, now)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT id, namespace, created_at FROM api_keys WHERE key_hash = $1", key_hash)
        return ApiKey(row[0], row[1], row[2]) if row else None

    async def list_api_keys(self, namespace: str) -> list[ApiKey]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, namespace, created_at FROM api_keys WHERE namespace = $1 ORDER BY created_at, id", namespace
            )
        return [ApiKey(r[0], r[1], r[2]) for r in rows]

    async def revoke_api_key(self, namespace: str, key_id: str) -> None:
        count = await self._announce(
            _announcing("DELETE FROM api_keys WHERE namespace = $1 AND id = $2", 3),
            namespace, key_id, change=Change(namespace, "api_key", key_id),
        )
        if count == 0:
            raise NotFound("API key not found")

    async def get_auth_settings(self, namespace: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            sealed = await conn.fetchval("SELECT settings_sealed FROM namespace_auth WHERE namespace = $1", namespace)
        return json.loads(self._open(sealed, AUTH, namespace)) if sealed is not None else None

    async def put_auth_settings(self, namespace: str, settings: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(settings)).encode(), AUTH, namespace)
        await self._upsert(
            "INSERT INTO namespace_auth (namespace, settings_sealed, updated_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (namespace) DO UPDATE SET settings_sealed = excluded.settings_sealed,"
            " updated_at = excluded.updated_at",
            (namespace, sealed, time.time()), Change(namespace, "auth"),
        )

    async def delete_auth_settings(self, namespace: str) -> None:
        await self._announce(
            _announcing("DELETE FROM namespace_auth WHERE namespace = $1", 2), namespace,
            change=Change(namespace, "auth"),
        )

    async def _upsert(self, write: str, args: tuple[Any, ...], change: Change) -> None:
        """An announcing upsert into a namespace's table; a missing namespace is `NotFound`."""
        try:
            await self._announce(_announcing(write, len(args) + 1), *args, change=change)
        except StoreError as exc:
            if "ForeignKeyViolation" in str(exc):
                raise NotFound(f"namespace {change.namespace!r} not found") from None
            raise

    # -- push config -------------------------------------------------------------------------

    async def get_push_config(self, namespace: str) -> PushConfig | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed, updated_at "
                "FROM push_config WHERE namespace = $1", namespace,
            )
        return push_config_from_row(self.keyring, namespace, row) if row is not None else None

    async def put_push_config(self, config: PushConfig) -> PushConfig:
        ns = config.namespace
        now = time.time()
        seal = self.keyring.seal
        await self._upsert(
            "INSERT INTO push_config (namespace, ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed,"
            " updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace) DO UPDATE SET"
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
        await self._announce(
            _announcing("DELETE FROM push_config WHERE namespace = $1", 2), namespace,
            change=Change(namespace, "push_config"),
        )

    # -- credentials -------------------------------------------------------------------------

    async def get_credentials(self, namespace: str, provider: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            sealed = await conn.fetchval(
                "SELECT document_sealed FROM push_credentials WHERE namespace = $1 AND provider = $2",
                namespace, provider,
            )
        if sealed is None:
            return None
        return open_json(self.keyring, sealed, CREDENTIALS, credentials_context(namespace, provider))

    async def all_credentials(self, namespace: str) -> dict[str, dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT provider, document_sealed FROM push_credentials WHERE namespace = $1 ORDER BY provider",
                namespace,
            )
        return {r[0]: open_json(self.keyring, r[1], CREDENTIALS, credentials_context(namespace, r[0])) for r in rows}

    async def credentials_updated_at(self, namespace: str) -> dict[str, float]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT provider, updated_at FROM push_credentials WHERE namespace = $1", namespace
            )
        return {r[0]: r[1] for r in rows}

    async def put_credentials(self, namespace: str, provider: str, document: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(document)).encode(), CREDENTIALS, f"{namespace}\x00{provider}")
        await self._upsert(
            "INSERT INTO push_credentials (namespace, provider, document_sealed, updated_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (namespace, provider) DO UPDATE SET document_sealed = excluded.document_sealed,"
            " updated_at = excluded.updated_at",
            (namespace, provider, sealed, time.time()), Change(namespace, "credentials", provider),
        )

    async def delete_credentials(self, namespace: str, provider: str) -> None:
        await self._announce(
            _announcing("DELETE FROM push_credentials WHERE namespace = $1 AND provider = $2", 3),
            namespace, provider, change=Change(namespace, "credentials", provider),
        )

    # -- devices -----------------------------------------------------------------------------

    def token_fingerprint(self, namespace: str, token: str) -> str:
        return fingerprint(self._fp_key, namespace, token)

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
            async with self._tx() as conn:
                # Gateways registering the same physical token queue here, so each one's DELETE below sees
                # the other's committed row: exactly one owner, whatever the interleaving.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(fp))
                existing = await conn.fetchrow(
                    "SELECT id, created_at FROM devices WHERE namespace = $1 AND user_id = $2 AND device_id = $3"
                    " FOR UPDATE", namespace, user_id, device_id,
                )
                row_id, created = (existing[0], existing[1]) if existing else (str(uuid.uuid4()), now)
                upsert = (
                    "INSERT INTO devices (id, namespace, user_id, device_id, provider, token_sealed, token_fp,"
                    " platform, app_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
                    " $10, $11) ON CONFLICT (namespace, user_id, device_id) DO UPDATE SET provider = excluded.provider,"
                    " token_sealed = excluded.token_sealed, token_fp = excluded.token_fp,"
                    " platform = excluded.platform, app_version = excluded.app_version,"
                    " updated_at = excluded.updated_at RETURNING id, created_at"
                )
                sealed = self.keyring.seal(token.encode(), TOKENS, f"{namespace}\x00{row_id}")
                got = await conn.fetchrow(upsert, row_id, namespace, user_id, device_id, provider, sealed, fp,
                                          platform, app_version, created, now)
                if got[0] != row_id:  # a concurrent first registration of this device won the insert
                    row_id, created = got[0], got[1]
                    await conn.execute(
                        "UPDATE devices SET token_sealed = $1 WHERE id = $2",
                        self.keyring.seal(token.encode(), TOKENS, f"{namespace}\x00{row_id}"), row_id,
                    )
                # One physical token belongs to one user per namespace: the newest registration keeps it.
                await conn.execute(
                    "DELETE FROM devices WHERE namespace = $1 AND token_fp = $2 AND id != $3", namespace, fp, row_id
                )
                change = Change(namespace, "device", row_id)
                await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", change.to_payload(self.changes.origin))
        except StoreError as exc:
            if "ForeignKeyViolation" in str(exc):
                raise NotFound(f"namespace {namespace!r} not found") from None
            raise StoreError("device registration failed") from None
        self.changes.publish(change)
        return Device(row_id, namespace, user_id, device_id, provider, platform, app_version, created, now)

    async def list_user_devices(self, namespace: str, user_id: str, with_tokens: bool = False) -> list[Device]:
        columns = DEVICE_COLUMNS + (", token_sealed" if with_tokens else "")
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {columns} FROM devices WHERE namespace = $1 AND user_id = $2 ORDER BY created_at, id",
                namespace, user_id,
            )
        return devices_from_rows(self.keyring, namespace, rows, with_tokens)

    async def delete_device(self, namespace: str, device_row_id: str, user_id: str | None = None) -> None:
        change = Change(namespace, "device", device_row_id)
        if user_id is None:
            count = await self._announce(
                _announcing("DELETE FROM devices WHERE id = $1 AND namespace = $2", 3),
                device_row_id, namespace, change=change,
            )
        else:
            count = await self._announce(
                _announcing("DELETE FROM devices WHERE id = $1 AND namespace = $2 AND user_id = $3", 4),
                device_row_id, namespace, user_id, change=change,
            )
        if count == 0:
            raise NotFound("device not found")

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        count = await self._announce(
            _announcing(
                "DELETE FROM devices WHERE id = $1 AND namespace = $2"
                " AND ($3::double precision IS NULL OR updated_at < $3)", 4,
            ),
            device_row_id, namespace, registered_before, change=Change(namespace, "device", device_row_id),
        )
        return count > 0

    # -- outbox ------------------------------------------------------------------------------

    async def record_delivery(self, namespace: str, user_id: str, device_id: str, message: dict[str, Any]) -> None:
        await self.record_deliveries(namespace, [(user_id, device_id, message)])

    async def record_deliveries(
        self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> None:
        params = outbox_rows(namespace, rows)
        if not params:
            return
        async with self._conn() as conn:
            await conn.executemany(  # one implicit transaction: all rows or none
                "INSERT INTO outbox (namespace, user_id, device_id, message_json, delivered_at)"
                " VALUES ($1, $2, $3, $4, $5)", params,
            )

    async def list_deliveries(self, namespace: str, limit: int = 1000) -> list[OutboxRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, namespace, user_id, device_id, message_json, delivered_at FROM outbox"
                " WHERE namespace = $1 ORDER BY id LIMIT $2", namespace, limit,
            )
        return [outbox_from_row(r) for r in rows]

    # -- functions ---------------------------------------------------------------------------

    async def put_function(self, namespace: str, name: str, module: bytes, limits: Mapping[str, Any]) -> FunctionRecord:
        now = time.time()
        digest = hashlib.sha256(module).hexdigest()
        await self._upsert(
            "INSERT INTO functions (namespace, name, sha256, size, module, limits_json, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (namespace, name) DO UPDATE SET"
            " sha256 = excluded.sha256, size = excluded.size, module = excluded.module,"
            " limits_json = excluded.limits_json, updated_at = excluded.updated_at",
            (namespace, name, digest, len(module), bytes(module), json.dumps(dict(limits)), now, now),
            Change(namespace, "function", name),
        )
        return await self.get_function(namespace, name, with_module=False)

    async def get_function(self, namespace: str, name: str, with_module: bool = True) -> FunctionRecord:
        module_col = "module" if with_module else "NULL::bytea"
        async with self._conn() as conn:
            r = await conn.fetchrow(
                f"SELECT namespace, name, sha256, size, limits_json, created_at, updated_at, {module_col}"
                " FROM functions WHERE namespace = $1 AND name = $2", namespace, name,
            )
        if r is None:
            raise NotFound(f"function {name!r} not found")
        return function_from_row(r)

    async def list_functions(self, namespace: str) -> list[FunctionRecord]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT namespace, name, sha256, size, limits_json, created_at, updated_at FROM functions"
                " WHERE namespace = $1 ORDER BY name", namespace,
            )
        return [function_from_row(r) for r in rows]

    async def delete_function(self, namespace: str, name: str) -> None:
        count = await self._announce(
            _announcing("DELETE FROM functions WHERE namespace = $1 AND name = $2", 3),
            namespace, name, change=Change(namespace, "function", name),
        )
        if count == 0:
            raise NotFound(f"function {name!r} not found")

    # -- key rotation (see rotation.py) ------------------------------------------------------

    async def sealed_page(self, column: SealedColumn, after: tuple[str, ...] | None, limit: int) -> list[SealedRow]:
        sql, args = page_sql(column, after, limit, lambda i: f"${i}")
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [column.row(tuple(r)) for r in rows]

    async def swap_sealed(self, column: SealedColumn, swaps: Sequence[tuple[tuple[str, ...], str, str]]) -> int:
        sql = swap_sql(column, lambda i: f"${i}")
        done = 0
        async with self._tx() as conn:
            for key, old, new in swaps:
                status = await conn.execute(sql, new, old, *key)
                done += int(status.rsplit(" ", 1)[-1])
        return done
