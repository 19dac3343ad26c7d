"""The embedded store: one SQLite file in WAL mode through aiosqlite. Needs nothing installed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from cachetools import LRUCache

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

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)



_OUTBOX_INSERT = (
    "INSERT INTO outbox (namespace, user_id, device_id, message_json, delivered_at) VALUES (?, ?, ?, ?, ?)"
)
#: LOOP_WRITE_STRIKES commits in a row on the loop thread slower than LOOP_WRITE_BUDGET (a slow or
#: saturated disk; one slow commit is usually just the process being descheduled) send outbox writes
#: back to aiosqlite's thread for LOOP_WRITE_COOLDOWN seconds, so a bad disk cannot keep stalling the loop.
LOOP_WRITE_BUDGET = 0.002
LOOP_WRITE_STRIKES = 2
LOOP_WRITE_COOLDOWN = 5.0
#: Users whose device lists are kept between sends (see `list_user_devices`).
DEVICE_CACHE_USERS = 10_000
#: Loop-thread commits between PASSIVE WAL checkpoints (run on a worker thread; the loop never checkpoints).
CHECKPOINT_EVERY = 256


def _namespace_missing(exc: sqlite3.IntegrityError) -> bool:
    return "FOREIGN KEY" in str(exc)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _LoopConnection:
    """The one SQLite connection used on the event loop's own thread: a send's reads and its outbox write.

    Why: a hop to aiosqlite's thread costs two thread wake-ups, several times more than an indexed read
    of a few rows or an INSERT + COMMIT in WAL mode with ``synchronous=NORMAL`` (a page-cache write).
    One connection for both, because a connection's page cache survives its own commits but not
    another connection's: with a separate reader, every outbox commit made the next device read start
    cold. (Numbers in bench/README.md, "Runtime".)

    It is kept from ever waiting on the loop: ``busy_timeout=0`` (a write that finds the write lock
    held, or a read that finds the WAL busy, takes the aiosqlite path instead, which waits on its own
    thread), ``wal_autocheckpoint=0`` (checkpoints fsync; a PASSIVE one runs on a worker thread every
    CHECKPOINT_EVERY commits instead), and commits over LOOP_WRITE_BUDGET turn the write path off for
    a while. A send's rows (all the devices of one fan-out, see `OutboxProvider`) are one transaction,
    committed before the call returns: nothing waits for a later turn of the loop, so a delivery that
    only reads and writes here never suspends. Only the store's own SELECTs and outbox INSERTs run here.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("busy_timeout=0", "foreign_keys=ON", "synchronous=NORMAL", "wal_autocheckpoint=0"):
            self.conn.execute(f"PRAGMA {pragma}")
        self._off_until = 0.0
        self._strikes = 0
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._closed = False

    def usable(self) -> bool:
        return not self._closed and time.monotonic() >= self._off_until

    def data_version(self) -> int | None:
        """SQLite's count of commits made by *other* connections (any process) since this one opened;
        None when busy. Our own outbox commits do not move it, device writes (aiosqlite) always do."""
        rows = self.read("PRAGMA data_version", ())
        return int(rows[0][0]) if rows else None

    def read(self, sql: str, params: tuple[Any, ...]) -> list[Any] | None:
        """Rows, or None when SQLite is busy (the caller reads through aiosqlite instead)."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return None
            raise StoreError(f"read failed: {type(exc).__name__}") from None

    def write(self, rows: list[tuple[Any, ...]]) -> bool:
        """Commit ``rows`` in one transaction; False means "not here, use the aiosqlite path"
        (nothing was written). Raises `StoreError` when the rows themselves are refused."""
        return self.usable() and self._commit(rows)

    def _commit(self, rows: list[tuple[Any, ...]]) -> bool:
        conn = self.conn
        start = time.perf_counter()
        try:
            if len(rows) == 1:
                conn.execute(_OUTBOX_INSERT, rows[0])  # autocommit: its own transaction
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_OUTBOX_INSERT, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return False
            raise StoreError(f"outbox write failed: {type(exc).__name__}") from None
        finally:
            elapsed = time.perf_counter() - start
            self._strikes = self._strikes + 1 if elapsed > LOOP_WRITE_BUDGET else 0
            if self._strikes >= LOOP_WRITE_STRIKES:
                self._strikes = 0
                self._off_until = time.monotonic() + LOOP_WRITE_COOLDOWN
                log.warning("outbox commits on the event loop took %.1f ms; using the writer thread for %.0f s",
                            elapsed * 1000, LOOP_WRITE_COOLDOWN)
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and self._checkpoint is None:
            self._checkpoint = asyncio.ensure_future(asyncio.to_thread(self._run_checkpoint))
            self._checkpoint.add_done_callback(self._checkpoint_done)
        return True

    def _run_checkpoint(self) -> None:
        # Its own connection: PASSIVE never waits for readers or writers, and this thread is not the loop.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _checkpoint_done(self, fut: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("WAL checkpoint failed: %s", type(fut.exception()).__name__)

    async def aclose(self) -> None:
        """Wait for a running checkpoint, close the connection."""
        self._closed = True
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        self.conn.close()


class SQLiteStore:
    """Implements every protocol in `store.base`. Secrets are sealed with the key ring."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, keyring: KeyRing) -> None:
        self.path = str(path)
        self.keyring = keyring
        self._db: aiosqlite.Connection | None = None
        self._loop_db: _LoopConnection | None = None
        #: (namespace, user, with tokens) -> devices, valid while `_devices_version` is current.
        self._devices: LRUCache[tuple[str, str, bool], tuple[Device, ...]] = LRUCache(maxsize=DEVICE_CACHE_USERS)
        self._devices_version = -1
        self._fp_key = b""
        # One connection serialises statements but not transactions: writes take this lock so a
        # statement of one coroutine never lands inside (or is rolled back with) another's transaction.
        self._writing = asyncio.Lock()
        #: Announces each committed change in-process (one SQLite file has one gateway).
        self.changes = LocalChangeFeed()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SQLiteStore:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        self._db = db
        try:
            await self._migrate()
            self._fp_key = await self._fingerprint_key()
            if self.path != ":memory:":
                self._loop_db = _LoopConnection(str(Path(self.path).resolve()))
        except BaseException:
            await self.aclose()  # e.g. the wrong master key: do not leak the connection's thread
            raise
        return self

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Small, indexed reads: on the loop thread when possible (see `_LoopConnection`), else one aiosqlite hop."""
        if self._loop_db is not None:
            rows = self._loop_db.read(sql, params)
            if rows is not None:
                return rows
        return list(await self.db.execute_fetchall(sql, params))

    async def _fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> Any | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def aclose(self) -> None:
        if self._loop_db is not None:
            loop_db, self._loop_db = self._loop_db, None
            await loop_db.aclose()
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> SQLiteStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def _write(
        self, sql: str, params: tuple[Any, ...] = (), change: Change | None = None
    ) -> aiosqlite.Cursor:
        async with self._writing:
            cur = await self.db.execute(sql, params)
        if change is not None and cur.rowcount:
            self.changes.publish(change)
        return cur

    async def ping(self) -> None:
        await self.db.execute("SELECT 1")

    async def _migrate(self) -> None:
        db = self.db
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in render(migration, self.dialect):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def _fingerprint_key(self) -> bytes:
        """The token-fingerprint key lives sealed in the store, so key rotation never changes fingerprints."""
        async with self.db.execute("SELECT value FROM meta WHERE key = ?", (FINGERPRINT_KEY,)) as cur:
            row = await cur.fetchone()
        if row is None:
            sealed = self.keyring.seal(os.urandom(32), FINGERPRINT_KEY)
            await self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (FINGERPRINT_KEY, sealed))
            async with self.db.execute("SELECT value FROM meta WHERE key = ?", (FINGERPRINT_KEY,)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return open_fingerprint_key(self.keyring, row[0])

    def _open(self, sealed: str, purpose: str, context: str) -> str:
        return open_text(self.keyring, sealed, purpose, context)

    # -- namespaces --------------------------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        try:
            await self._write("INSERT INTO namespaces (name, created_at) VALUES (?, ?)", (name, time.time()))
        except sqlite3.IntegrityError:
            raise StoreError(f"namespace {name!r} already exists") from None

    async def namespace_exists(self, name: str) -> bool:
        return await self._fetchone("SELECT 1 FROM namespaces WHERE name = ?", (name,)) is not None

    async def list_namespaces(self) -> list[str]:
        async with self.db.execute("SELECT name FROM namespaces ORDER BY name") as cur:
            return [r[0] for r in await cur.fetchall()]

    # -- API keys and end-user auth settings --------------------------------------------------

    async def add_api_key(self, namespace: str, key_id: str, key_hash: str) -> ApiKey:
        now = time.time()
        try:
            await self._write(
                "INSERT INTO api_keys (id, namespace, key_hash, created_at) VALUES (?, ?, ?, ?)",
                (key_id, namespace, key_hash, now), Change(namespace, "api_key", key_id),
            )
        except sqlite3.IntegrityError as exc:
            if _namespace_missing(exc):
                raise NotFound(f"namespace {namespace!r} not found") from None
            raise StoreError("API key id or hash already exists") from None
        return ApiKey(key_id, namespace, now)

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        row = await self._fetchone("SELECT id, namespace, created_at FROM api_keys WHERE key_hash = ?", (key_hash,))
        return ApiKey(row[0], row[1], row[2]) if row else None

    async def list_api_keys(self, namespace: str) -> list[ApiKey]:
        async with self.db.execute(
            "SELECT id, namespace, created_at FROM api_keys WHERE namespace = ? ORDER BY created_at, id", (namespace,)
        ) as cur:
            return [ApiKey(r[0], r[1], r[2]) for r in await cur.fetchall()]

    async def revoke_api_key(self, namespace: str, key_id: str) -> None:
        cur = await self._write("DELETE FROM api_keys WHERE namespace = ? AND id = ?", (namespace, key_id),
                                Change(namespace, "api_key", key_id))
        if cur.rowcount == 0:
            raise NotFound("API key not found")

    async def get_auth_settings(self, namespace: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT settings_sealed FROM namespace_auth WHERE namespace = ?", (namespace,))
        return json.loads(self._open(row[0], AUTH, namespace)) if row else None

    async def put_auth_settings(self, namespace: str, settings: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(settings)).encode(), AUTH, namespace)
        try:
            await self._write(
                "INSERT INTO namespace_auth (namespace, settings_sealed, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (namespace) DO UPDATE SET settings_sealed = excluded.settings_sealed,"
                " updated_at = excluded.updated_at",
                (namespace, sealed, time.time()), Change(namespace, "auth"),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"namespace {namespace!r} not found") from exc

    async def delete_auth_settings(self, namespace: str) -> None:
        await self._write("DELETE FROM namespace_auth WHERE namespace = ?", (namespace,), Change(namespace, "auth"))

    # -- push config -------------------------------------------------------------------------

    async def get_push_config(self, namespace: str) -> PushConfig | None:
        row = await self._fetchone(
            "SELECT ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed, updated_at "
            "FROM push_config WHERE namespace = ?", (namespace,)
        )
        return push_config_from_row(self.keyring, namespace, row) if row is not None else None

    async def put_push_config(self, config: PushConfig) -> PushConfig:
        ns = config.namespace
        now = time.time()
        seal = self.keyring.seal
        try:
            await self._write(
                "INSERT INTO push_config (namespace, ntfy_base_url, ntfy_auth_token_sealed, expo_access_token_sealed,"
                " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace) DO UPDATE SET"
                " ntfy_base_url = excluded.ntfy_base_url, ntfy_auth_token_sealed = excluded.ntfy_auth_token_sealed,"
                " expo_access_token_sealed = excluded.expo_access_token_sealed, updated_at = excluded.updated_at",
                (ns, config.ntfy_base_url,
                 seal(config.ntfy_auth_token.encode(), CONFIG_NTFY_TOKEN, ns) if config.ntfy_auth_token else "",
                 seal(config.expo_access_token.encode(), CONFIG_EXPO_TOKEN, ns) if config.expo_access_token else "",
                 now), Change(ns, "push_config"),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"namespace {ns!r} not found") from exc
        return PushConfig(ns, config.ntfy_base_url, config.ntfy_auth_token, config.expo_access_token, now)

    async def delete_push_config(self, namespace: str) -> None:
        await self._write("DELETE FROM push_config WHERE namespace = ?", (namespace,), Change(namespace, "push_config"))

    # -- credentials -------------------------------------------------------------------------

    async def get_credentials(self, namespace: str, provider: str) -> dict[str, Any] | None:
        row = await self._fetchone(
            "SELECT document_sealed FROM push_credentials WHERE namespace = ? AND provider = ?", (namespace, provider)
        )
        if row is None:
            return None
        return open_json(self.keyring, row[0], CREDENTIALS, credentials_context(namespace, provider))

    async def all_credentials(self, namespace: str) -> dict[str, dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT provider, document_sealed FROM push_credentials WHERE namespace = ? ORDER BY provider", (namespace,)
        )
        return {r[0]: open_json(self.keyring, r[1], CREDENTIALS, credentials_context(namespace, r[0])) for r in rows}

    async def credentials_updated_at(self, namespace: str) -> dict[str, float]:
        async with self.db.execute(
            "SELECT provider, updated_at FROM push_credentials WHERE namespace = ?", (namespace,)
        ) as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def put_credentials(self, namespace: str, provider: str, document: Mapping[str, Any]) -> None:
        sealed = self.keyring.seal(json.dumps(dict(document)).encode(), CREDENTIALS, f"{namespace}\x00{provider}")
        try:
            await self._write(
                "INSERT INTO push_credentials (namespace, provider, document_sealed, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, provider) DO UPDATE SET document_sealed = excluded.document_sealed,"
                " updated_at = excluded.updated_at",
                (namespace, provider, sealed, time.time()), Change(namespace, "credentials", provider),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"namespace {namespace!r} not found") from exc

    async def delete_credentials(self, namespace: str, provider: str) -> None:
        await self._write("DELETE FROM push_credentials WHERE namespace = ? AND provider = ?", (namespace, provider),
                          Change(namespace, "credentials", provider))

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
        new_id = str(uuid.uuid4())
        fp = self.token_fingerprint(namespace, token)
        async with self._writing:
            device = await self._register_locked(
                namespace, user_id, device_id, provider, token, platform, app_version, now, new_id, fp
            )
        self.changes.publish(Change(namespace, "device", device.id))
        return device

    async def _register_locked(
        self, namespace: str, user_id: str, device_id: str, provider: str, token: str, platform: str,
        app_version: str, now: float, new_id: str, fp: str,
    ) -> Device:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute(
                "SELECT id, created_at FROM devices WHERE namespace = ? AND user_id = ? AND device_id = ?",
                (namespace, user_id, device_id),
            ) as cur:
                existing = await cur.fetchone()
            row_id, created = (existing[0], existing[1]) if existing else (new_id, now)
            sealed = self.keyring.seal(token.encode(), TOKENS, f"{namespace}\x00{row_id}")
            await db.execute(
                "INSERT INTO devices (id, namespace, user_id, device_id, provider, token_sealed, token_fp, platform,"
                " app_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (namespace, user_id, device_id) DO UPDATE SET provider = excluded.provider,"
                " token_sealed = excluded.token_sealed, token_fp = excluded.token_fp, platform = excluded.platform,"
                " app_version = excluded.app_version, updated_at = excluded.updated_at",
                (row_id, namespace, user_id, device_id, provider, sealed, fp, platform, app_version, created, now),
            )
            # One physical token belongs to one user per namespace: the newest registration keeps it.
            await db.execute(
                "DELETE FROM devices WHERE namespace = ? AND token_fp = ? AND id != ?", (namespace, fp, row_id)
            )
            await db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            await db.execute("ROLLBACK")
            if _namespace_missing(exc):
                raise NotFound(f"namespace {namespace!r} not found") from None
            raise StoreError("device registration failed") from None
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return Device(row_id, namespace, user_id, device_id, provider, platform, app_version, created, now)

    async def list_user_devices(self, namespace: str, user_id: str, with_tokens: bool = False) -> list[Device]:
        # Every send reads this. The answer is kept until any other connection, in this process or
        # another, commits anything (`data_version`): exact, never stale, and one pragma read instead
        # of a query plus a decryption per device.
        version = self._loop_db.data_version() if self._loop_db is not None else None
        if version is not None:
            if version != self._devices_version:
                self._devices.clear()
                self._devices_version = version
            cached = self._devices.get((namespace, user_id, with_tokens))
            if cached is not None:
                return list(cached)
        columns = DEVICE_COLUMNS + (", token_sealed" if with_tokens else "")
        rows = await self._fetchall(
            f"SELECT {columns} FROM devices WHERE namespace = ? AND user_id = ? ORDER BY created_at, id",
            (namespace, user_id),
        )
        devices = devices_from_rows(self.keyring, namespace, rows, with_tokens)
        if version is not None and self._devices_version == version:
            self._devices[(namespace, user_id, with_tokens)] = tuple(devices)
        return devices

    async def delete_device(self, namespace: str, device_row_id: str, user_id: str | None = None) -> None:
        if user_id is None:
            cur = await self._write("DELETE FROM devices WHERE id = ? AND namespace = ?", (device_row_id, namespace),
                                    Change(namespace, "device", device_row_id))
        else:
            cur = await self._write(
                "DELETE FROM devices WHERE id = ? AND namespace = ? AND user_id = ?",
                (device_row_id, namespace, user_id), Change(namespace, "device", device_row_id),
            )
        if cur.rowcount == 0:
            raise NotFound("device not found")

    async def prune_device(self, namespace: str, device_row_id: str, registered_before: float | None) -> bool:
        cur = await self._write(
            "DELETE FROM devices WHERE id = ? AND namespace = ? AND (? IS NULL OR updated_at < ?)",
            (device_row_id, namespace, registered_before, registered_before),
            Change(namespace, "device", device_row_id),
        )
        return cur.rowcount > 0

    # -- outbox ------------------------------------------------------------------------------

    async def record_delivery(self, namespace: str, user_id: str, device_id: str, message: dict[str, Any]) -> None:
        await self.record_deliveries(namespace, [(user_id, device_id, message)])

    async def record_deliveries(self, namespace: str, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """One transaction, committed when this returns: on the loop thread when that cannot wait
        (see `_LoopConnection`), else through aiosqlite. Raises `StoreError` on failure."""
        params = outbox_rows(namespace, rows)
        if not params:
            return
        loop_db = self._loop_db
        # While a transaction of ours is open on the aiosqlite connection, the loop path would only hit BUSY.
        if loop_db is not None and not self._writing.locked() and loop_db.write(params):
            return
        await self._record_on_thread(params)

    async def _record_on_thread(self, params: list[tuple[Any, ...]]) -> None:
        """The aiosqlite path: waits for the write lock on aiosqlite's thread, never on the loop."""
        try:
            async with self._writing:
                if len(params) == 1:
                    await self.db.execute(_OUTBOX_INSERT, params[0])
                    return
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    await self.db.executemany(_OUTBOX_INSERT, params)
                    await self.db.execute("COMMIT")
                except BaseException:
                    if self.db.in_transaction:
                        await self.db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"outbox write failed: {type(exc).__name__}") from None

    async def list_deliveries(self, namespace: str, limit: int = 1000) -> list[OutboxRecord]:
        async with self.db.execute(
            "SELECT id, namespace, user_id, device_id, message_json, delivered_at FROM outbox WHERE namespace = ?"
            " ORDER BY id LIMIT ?", (namespace, limit)
        ) as cur:
            rows = await cur.fetchall()
        return [outbox_from_row(r) for r in rows]

    # -- functions ---------------------------------------------------------------------------

    async def put_function(self, namespace: str, name: str, module: bytes, limits: Mapping[str, Any]) -> FunctionRecord:
        now = time.time()
        digest = hashlib.sha256(module).hexdigest()
        try:
            await self._write(
                "INSERT INTO functions (namespace, name, sha256, size, module, limits_json, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (namespace, name) DO UPDATE SET sha256 = excluded.sha256,"
                " size = excluded.size, module = excluded.module, limits_json = excluded.limits_json,"
                " updated_at = excluded.updated_at",
                (namespace, name, digest, len(module), module, json.dumps(dict(limits)), now, now),
                Change(namespace, "function", name),
            )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"namespace {namespace!r} not found") from exc
        return await self.get_function(namespace, name, with_module=False)

    async def get_function(self, namespace: str, name: str, with_module: bool = True) -> FunctionRecord:
        module_col = "module" if with_module else "NULL"
        async with self.db.execute(
            f"SELECT namespace, name, sha256, size, limits_json, created_at, updated_at, {module_col} FROM functions"
            " WHERE namespace = ? AND name = ?", (namespace, name)
        ) as cur:
            r = await cur.fetchone()
        if r is None:
            raise NotFound(f"function {name!r} not found")
        return function_from_row(r)

    async def list_functions(self, namespace: str) -> list[FunctionRecord]:
        rows = await self._fetchall(
            "SELECT namespace, name, sha256, size, limits_json, created_at, updated_at FROM functions"
            " WHERE namespace = ? ORDER BY name", (namespace,)
        )
        return [function_from_row(r) for r in rows]

    async def delete_function(self, namespace: str, name: str) -> None:
        cur = await self._write("DELETE FROM functions WHERE namespace = ? AND name = ?", (namespace, name),
                                Change(namespace, "function", name))
        if cur.rowcount == 0:
            raise NotFound(f"function {name!r} not found")

    # -- key rotation (see rotation.py) ------------------------------------------------------

    async def sealed_page(self, column: SealedColumn, after: tuple[str, ...] | None, limit: int) -> list[SealedRow]:
        sql, args = page_sql(column, after, limit, lambda _i: "?")
        async with self.db.execute(sql, args) as cur:
            return [column.row(tuple(r)) for r in await cur.fetchall()]

    async def swap_sealed(self, column: SealedColumn, swaps: Sequence[tuple[tuple[str, ...], str, str]]) -> int:
        sql = swap_sql(column, lambda _i: "?")
        done = 0
        async with self._writing:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for key, old, new in swaps:
                    cur = await self.db.execute(sql, (new, old, *key))
                    done += cur.rowcount
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
        return done
