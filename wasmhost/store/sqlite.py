"""The embedded store: one SQLite file in WAL mode through aiosqlite. Needs nothing installed."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from .base import StoreError
from .changes import Change, LocalChangeFeed
from .driver import IntegrityError, Row
from .private import private_dir, private_file
from .relay import ChangeRelay
from .sealing import KeyRing
from .sql import SQLStore

__all__ = ["SQLiteDriver", "SQLiteStore"]

log = logging.getLogger(__name__)

#: One transaction's statements, each with the rows it runs for.
Steps = Sequence[tuple[str, Sequence[Sequence[Any]]]]

#: LOOP_WRITE_STRIKES commits in a row on the loop thread slower than LOOP_WRITE_BUDGET (a slow or
#: saturated disk; one slow commit is usually just the process being descheduled) send the send path's
#: writes back to aiosqlite's thread for LOOP_WRITE_COOLDOWN seconds, so a bad disk cannot keep stalling the loop.
LOOP_WRITE_BUDGET = 0.002
LOOP_WRITE_STRIKES = 2
LOOP_WRITE_COOLDOWN = 5.0
#: How long a group waits for the write lock (as busy_timeout would), and the longest sleep between tries.
GROUP_WAIT = 5.0
GROUP_WAIT_MAX = 0.001
#: Loop-thread commits between PASSIVE WAL checkpoints (run on a worker thread; the loop never checkpoints).
CHECKPOINT_EVERY = 256


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc) or "busy" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _store_error(exc: sqlite3.Error) -> StoreError:
    """SQLite errors as StoreErrors that name the failure, never the values of the row."""
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError("foreign_key" if "FOREIGN KEY" in str(exc) else "unique")
    return StoreError(f"sqlite: {type(exc).__name__}")


class _LoopConnection:
    """The one SQLite connection used on the event loop's own thread: the send path's small reads and writes.

    Why: a hop to aiosqlite's thread costs two thread wake-ups, several times an indexed read of a few
    rows or an INSERT + COMMIT in WAL mode with ``synchronous=NORMAL`` (a page-cache write). One
    connection for both, because a connection's page cache survives its own commits but not another
    connection's: with a separate reader, every send's commit made the next device read start cold.
    (Numbers in bench/README.md, "Runtime".)

    It is kept from ever waiting on the loop: ``busy_timeout=0`` (a write that finds the write lock
    held, or a read that finds the WAL busy, takes the aiosqlite path instead, which waits on its own
    thread), ``wal_autocheckpoint=0`` (checkpoints fsync; a PASSIVE one runs on a worker thread every
    CHECKPOINT_EVERY commits instead), and commits over LOOP_WRITE_BUDGET turn the write path off for
    a while. A send's rows are one transaction, committed before the call returns: nothing waits for a
    later turn of the loop, so a send that only reads and writes here never suspends.
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
        None when busy. This connection's own commits do not move it; aiosqlite's always do."""
        rows = self.read("PRAGMA data_version", ())
        return int(rows[0][0]) if rows else None

    def read(self, sql: str, params: Sequence[Any]) -> list[Any] | None:
        """Rows, or None when SQLite is busy (the caller reads through aiosqlite instead)."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return None
            raise _store_error(exc) from None

    def write(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> bool:
        """Commit every step's rows in one transaction; False means "not here, use the aiosqlite path"
        (nothing was written). Raises `StoreError` when the rows themselves are refused."""
        return self.usable() and self._commit(steps)

    def _commit(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> bool:
        conn = self.conn
        start = time.perf_counter()
        try:
            if len(steps) == 1 and len(steps[0][1]) == 1:
                conn.execute(steps[0][0], steps[0][1][0])  # autocommit: its own transaction
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, rows in steps:
                        if len(rows) == 1:  # execute() skips executemany's iterator: most steps are one row
                            conn.execute(sql, rows[0])
                        else:
                            conn.executemany(sql, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return False
            raise _store_error(exc) from None
        finally:
            elapsed = time.perf_counter() - start
            self._strikes = self._strikes + 1 if elapsed > LOOP_WRITE_BUDGET else 0
            if self._strikes >= LOOP_WRITE_STRIKES:
                self._strikes = 0
                self._off_until = time.monotonic() + LOOP_WRITE_COOLDOWN
                log.warning("commits on the event loop took %.1f ms; using the writer thread for %.0f s",
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


def _answer(group: list[tuple[Steps, asyncio.Future[None]]], errors: list[StoreError | None]) -> None:
    """Resolve each waiting caller's future with its outcome (None: committed)."""
    for (_, fut), error in zip(group, errors, strict=True):
        if fut.done():  # its caller was cancelled; what was committed stays committed
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


class _GroupWriter:
    """Commits the send path's writes that could not run on the loop: every write waiting at one moment
    shares one transaction, on a thread and connection of its own.

    Why: a write that finds the file locked (another process's commit, or one of ours) cannot wait on
    the loop. Sent to aiosqlite's thread one by one, each held the write lock across four thread hops
    (BEGIN, two statements, COMMIT) while the loop served the next request, whose write then found the
    lock held too: under steady load every write took the thread path, one transaction each (bench/README.md,
    "Gateway"). Here the writes that arrive while a group is committing form the next group: one
    ``BEGIN IMMEDIATE`` … ``COMMIT`` per group, each caller's steps inside a savepoint, so one caller's
    refused rows (a constraint) roll back only its own steps and raise only for it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="wasmhost-sqlite-writer")
        self._next: list[tuple[Steps, asyncio.Future[None]]] = []
        self._draining: asyncio.Future[None] | None = None
        #: Transactions committed, and the callers' writes they carried.
        self.groups = 0
        self.writes = 0

    @property
    def busy(self) -> bool:
        """A group is committing: a new write joins the next one rather than try the locked file."""
        return self._draining is not None

    async def commit(self, steps: Steps) -> None:
        """Commit `steps` with whatever else is waiting, before returning. Raises `StoreError`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next.append((steps, fut))
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        group: list[tuple[Steps, asyncio.Future[None]]] = []
        try:
            while self._next:
                group, self._next = self._next, []
                errors: list[StoreError | None]
                try:
                    errors = await loop.run_in_executor(self._thread, self._commit_group, [s for s, _ in group])
                except StoreError as exc:
                    errors = [exc] * len(group)
                except Exception as exc:  # e.g. the executor shut down: its callers must not wait forever
                    errors = [StoreError(f"sqlite writer: {type(exc).__name__}")] * len(group)
                else:
                    self.groups += 1
                    self.writes += len(group)
                _answer(group, errors)
                group = []
        finally:
            self._draining = None
            # Cancelled mid-group (the loop is closing): nobody learns whether those rows were committed.
            left = group + self._next
            self._next = []
            _answer(left, [StoreError("sqlite writer: stopped")] * len(left))

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in ("busy_timeout=0", "foreign_keys=ON", "synchronous=NORMAL"):
                conn.execute(f"PRAGMA {pragma}")
            self._conn = conn
        return self._conn

    @staticmethod
    def _begin(conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``, waiting for the write lock in short sleeps (at most `GROUP_WAIT_MAX`
        apart) for up to `GROUP_WAIT` seconds. SQLite's own busy handler backs off to 25-100 ms sleeps, so a
        group waiting behind another worker's many short commits slept long after the lock was free (the
        p99 at 16 connections: bench/README.md, "Gateway"). The thread waits, never the loop."""
        deadline = time.monotonic() + GROUP_WAIT
        delay = 0.0001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, GROUP_WAIT_MAX)

    def _commit_group(self, group: list[Steps]) -> list[StoreError | None]:
        """On the writer thread: one transaction for the whole group; per caller, None or its error."""
        errors: list[StoreError | None] = []
        try:
            conn = self._connect()
            self._begin(conn)
            try:
                for steps in group:
                    conn.execute("SAVEPOINT caller")
                    try:
                        for sql, rows in steps:
                            conn.executemany(sql, rows)
                    except sqlite3.Error as exc:
                        if _is_busy(exc):
                            raise
                        conn.execute("ROLLBACK TO caller")
                        errors.append(_store_error(exc))
                    else:
                        errors.append(None)
                    conn.execute("RELEASE caller")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(exc) from None
        return errors

    async def aclose(self) -> None:
        while self._draining is not None:
            await asyncio.wait([self._draining])
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _roll_back(db: aiosqlite.Connection) -> bool:
    """Roll back whatever transaction the connection has once the statements already handed to its thread
    have run; whether there was one. Deciding from `in_transaction` before would miss a BEGIN still in the
    thread's queue (a task cancelled while awaiting it), which then held the write lock for good.
    Submitted at once, so a second cancellation cannot stop it. None open (the BEGIN failed, or a COMMIT
    ran first) is nothing to undo; a ROLLBACK that fails with one open is a `StoreError`."""
    try:
        await db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        if db.in_transaction:  # exact now: everything queued before the ROLLBACK has run
            raise _store_error(exc) from None
        return False


class _SQLiteTx:
    """A ``BEGIN IMMEDIATE`` transaction: it holds the file's write lock, so `lock` has nothing to add."""

    for_update = ""
    skip_locked = ""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.changes: list[Change] = []

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(await self.db.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as exc:
            raise _store_error(exc) from None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cur = await self.db.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise _store_error(exc) from None
        return max(cur.rowcount, 0)

    async def lock(self, key: int) -> None:
        return None

    def announce(self, change: Change) -> None:
        self.changes.append(change)


class SQLiteDriver:
    """aiosqlite for writes and transactions, plus the loop-thread connection (`_LoopConnection`) for
    the send path. Changes are announced in-process (one SQLite file serves one host)."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self.loop_db: _LoopConnection | None = None
        self._writer: _GroupWriter | None = None
        # One connection serialises statements but not transactions: writes take this lock so a
        # statement of one coroutine never lands inside (or is rolled back with) another's transaction.
        self._writing = asyncio.Lock()
        self.changes = LocalChangeFeed()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            path = Path(self.path)
            private_dir(path.parent)
            private_file(path, create=True)  # before SQLite: its -wal and -shm take the database's mode
            for suffix in ("-wal", "-shm", "-journal"):
                private_file(path.with_name(path.name + suffix))
        db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db = db
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=5000"):
            await db.execute(f"PRAGMA {pragma}")

    async def started(self) -> None:
        """After migrations: the loop connection opens on the current schema."""
        if self.path != ":memory:":
            self.loop_db = _LoopConnection(str(Path(self.path).resolve()))
            self._writer = _GroupWriter(str(Path(self.path).resolve()))


    async def aclose(self) -> None:
        if self.loop_db is not None:
            loop_db, self.loop_db = self.loop_db, None
            await loop_db.aclose()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.aclose()
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, quick: bool = False) -> list[Row]:
        if quick and self.loop_db is not None:
            rows = self.loop_db.read(sql, params)
            if rows is not None:
                return rows
        try:
            return list(await self.db.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as exc:
            raise _store_error(exc) from None

    async def execute(self, sql: str, params: Sequence[Any] = (), change: Change | None = None) -> int:
        async with self._writing:
            try:
                cur = await self.db.execute(sql, tuple(params))
            except sqlite3.Error as exc:
                raise _store_error(exc) from None
            except asyncio.CancelledError:
                if change is not None:
                    # Cancelled with the statement in the thread's hands: it runs all the same. Once it
                    # has, announce what it may have changed (announcing nothing costs a cache refill).
                    await self.db.execute("SELECT 1")
                    self.changes.publish(change)
                raise
        count = max(cur.rowcount, 0)
        if change is not None and count:
            self.changes.publish(change)
        return count

    async def commit_now(self, steps: Steps, *, flush: bool = True, change: Change | None = None) -> None:
        """On the loop thread when that cannot wait (see `_LoopConnection`), else in the next group of
        `_GroupWriter`. While a group is committing, or a transaction of ours is open on the aiosqlite
        connection, the loop path would only hit BUSY: the write joins the next group at once."""
        loop_db, writer = self.loop_db, self._writer
        if loop_db is None or writer is None:  # a private in-memory database
            await self._commit_on_thread(steps)
        elif self._writing.locked() or writer.busy or not loop_db.write(steps):
            await writer.commit(steps)
        if change is not None:
            self.changes.publish(change)

    async def _commit_on_thread(self, steps: Steps) -> None:
        """The aiosqlite path: waits for the write lock on aiosqlite's thread, never on the loop."""
        if len(steps) == 1 and len(steps[0][1]) == 1:
            await self.execute(steps[0][0], steps[0][1][0])
            return
        async with self.transaction() as tx:
            try:
                for sql, rows in steps:
                    await tx.db.executemany(sql, rows)
            except sqlite3.Error as exc:
                raise _store_error(exc) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SQLiteTx]:
        async with self._writing:
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
            except BaseException as exc:
                await _roll_back(db)  # cancelled with the BEGIN in the thread's hands: it runs all the same
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(exc) from None
                raise
            tx = _SQLiteTx(db)
            committing = False
            try:
                yield tx
                committing = True
                await db.execute("COMMIT")
            except BaseException as exc:
                if not await _roll_back(db) and committing:
                    # Cancelled with the COMMIT in the thread's hands, and it ran: announce what it wrote.
                    for change in tx.changes:
                        self.changes.publish(change)
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(exc) from None
                raise
        for change in tx.changes:
            self.changes.publish(change)

    def cache_version(self) -> int | None:
        return self.loop_db.data_version() if self.loop_db is not None else None


class SQLiteStore(SQLStore):
    """The store on one SQLite file. Every process that opens it relays its changes to the others through
    the ring beside it (`relay.ChangeRelay`, ``<file>-changes``), and its device cache follows the ring."""

    driver: SQLiteDriver

    def __init__(self, path: str | Path, keyring: KeyRing) -> None:
        super().__init__(SQLiteDriver(path), keyring)
        self.path = str(path)
        self.relay: ChangeRelay | None = None

    async def open(self) -> SQLiteStore:
        await super().open()
        if self.relay is None and self.path != ":memory:":  # a private database has no one to tell
            resolved = Path(self.path).resolve()
            self.relay = ChangeRelay(resolved.with_name(resolved.name + "-changes"), self.changes)
            self.relay.start()
            self.device_counter = self.relay.device_sequence
        return self

    async def aclose(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
            self.device_counter = None
        await super().aclose()

    async def __aenter__(self) -> SQLiteStore:
        return await self.open()
