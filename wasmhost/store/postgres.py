"""The fleet store: PostgreSQL through an asyncpg pool, shared by any number of gateways.

The statements are `SQLStore`'s, the same as on SQLite; this driver adds what a fleet needs: every
write announces itself with ``NOTIFY`` in its own transaction (see `PgChangeFeed`), and `Tx.lock` is a
transaction-scoped advisory lock (token exclusivity across gateways, migrations of gateways starting
together).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .._env import env_int
from .base import StoreError
from .changes import Change, LocalChangeFeed
from .driver import IntegrityError, Row, dollar_placeholders
from .sealing import KeyRing
from .sql import SQLStore

if TYPE_CHECKING:
    from .fleetcaps import PgCapLedger

__all__ = ["CHANNEL", "PgChangeFeed", "PgDriver", "PostgresStore"]

LOG = logging.getLogger("wasmhost.store")

#: The NOTIFY channel every gateway listens on.
CHANNEL = "wasmhost_changes"
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


def _safe(exc: BaseException) -> StoreError:
    """Database errors become StoreErrors naming the failure, never the row values PostgreSQL may quote."""
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return IntegrityError("foreign_key")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return IntegrityError("unique")
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
        self.device_version = 0  # bumped by every device change heard or made, and by "everything"

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

    def _dispatch(self, change: Change) -> None:
        if change.kind == "device" or change.is_everything:
            self.device_version += 1
        super()._dispatch(change)

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


def _written(status: str) -> int:
    """Rows written, from a command status such as ``DELETE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


#: Most parameters one combined statement may carry (PostgreSQL's limit is 32 767).
MAX_COMBINED_PARAMS = 4096


def _one_statement(steps: Sequence[tuple[str, Sequence[Sequence[Any]]]], payload: str | None = None
                   ) -> tuple[str, list[Any]] | None:
    """Plain ``INSERT … VALUES (?, …)`` steps as one statement: multi-row VALUES, all but the last in
    data-modifying CTEs. Foreign keys are checked at the end of the statement, so the order of the
    steps does not matter; the statement commits all rows or none. With a NOTIFY `payload`, every step is
    a CTE (each runs exactly once) and the statement sends it. None when a step is not such an INSERT
    (an UPDATE) or the rows are too many to send at once."""
    parts: list[str] = []
    args: list[Any] = []
    for sql, rows in steps:
        head, sep, tail = sql.partition(" VALUES (")
        if not sep or not head.lstrip().upper().startswith("INSERT") or tail.replace("?, ", "") != "?)":
            return None
        parts.append(head + " VALUES " + ", ".join(["(" + tail] * len(rows)))
        args.extend(v for row in rows for v in row)
        if len(args) > MAX_COMBINED_PARAMS:
            return None
    if payload is not None:
        ctes = ", ".join(f"s{i} AS ({part})" for i, part in enumerate(parts))
        return f"WITH {ctes} SELECT pg_notify('{CHANNEL}', ?)", [*args, payload]
    ctes = ", ".join(f"s{i} AS ({part})" for i, part in enumerate(parts[:-1]))
    return (f"WITH {ctes} {parts[-1]}" if ctes else parts[-1]), args


class _PgTx:
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: asyncpg.Connection, driver: PgDriver) -> None:
        self.conn = conn
        self.driver = driver
        self.changes: list[Change] = []

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.driver.round_trips += 1
        return list(await self.conn.fetch(dollar_placeholders(sql), *params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.driver.round_trips += 1
        return _written(await self.conn.execute(dollar_placeholders(sql), *params))

    async def lock(self, key: int) -> None:
        self.driver.round_trips += 1
        await self.conn.execute("SELECT pg_advisory_xact_lock($1)", key)

    def announce(self, change: Change) -> None:
        self.changes.append(change)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pooled connection goes back as it is. asyncpg's default reset sends ``pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` on every release: a hidden round trip after every statement of the
    hot path (bench/README.md, "Gateway on PostgreSQL"). Nothing here leaves session state to reset: locks
    are transaction-scoped (``pg_advisory_xact_lock``), LISTEN has its own connection, no statement SETs
    a session variable or opens a cursor, and asyncpg itself still rolls back a transaction left open."""


class PgDriver:
    """An asyncpg pool per gateway, plus the change feed's LISTEN connection."""

    dialect = "postgresql"

    def __init__(self, url: str, *, min_size: int | None = None, max_size: int | None = None,
                 listen: bool = True) -> None:
        self.url = url
        self.min_size = min_size if min_size is not None else env_int("WASMHOST_PG_POOL_MIN", DEFAULT_POOL_MIN)
        self.max_size = max_size if max_size is not None else env_int("WASMHOST_PG_POOL_MAX", DEFAULT_POOL_MAX)
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ValueError("PostgreSQL pool sizes need 0 <= min <= max and max >= 1")
        self.unflushed_max = max(1, self.max_size // 2)
        self._listen = listen
        self._pool: asyncpg.Pool | None = None
        #: Connections whose commits do not wait for the WAL to reach the disk (``synchronous_commit=off``),
        #: for `commit_now(flush=False)`: a commit that waits costs a disk flush, milliseconds on a busy disk.
        self._unflushed: asyncpg.Pool | None = None
        #: Statements sent to the server (a transaction's BEGIN and COMMIT count), for tests and benchmarks
        #: that count what a request costs.
        self.round_trips = 0
        self.changes = PgChangeFeed(self._connect_listener)

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

    async def open(self) -> None:
        try:
            dsn, settings = self._dsn_and_settings("pool")
            # Connections are kept once opened (asyncpg would close one idle for 5 minutes): a request
            # after a quiet spell must not pay for a connection's setup.
            self._pool = await asyncpg.create_pool(
                dsn, min_size=self.min_size, max_size=self.max_size, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, server_settings=settings, max_inactive_connection_lifetime=0,
                reset=_keep_session,
            )
            dsn, settings = self._dsn_and_settings("unflushed")
            self._unflushed = await asyncpg.create_pool(
                dsn, min_size=min(1, self.min_size), max_size=self.unflushed_max, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT, server_settings={**settings, "synchronous_commit": "off"},
                max_inactive_connection_lifetime=0, reset=_keep_session,
            )
        except _DB_ERRORS as exc:
            await self._close_pools()
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise StoreError(f"cannot connect to PostgreSQL: {detail}") from None
        except ValueError as exc:  # our URL split or asyncpg's DSN parser
            await self._close_pools()
            raise StoreError(f"invalid PostgreSQL URL: {self._scrub(str(exc))}") from None

    async def started(self) -> None:
        if self._listen:
            await self.changes.start()

    async def aclose(self) -> None:
        await self.changes.aclose()
        await self._close_pools()

    async def _close_pools(self) -> None:
        pools = (self._pool, self._unflushed)
        self._pool = self._unflushed = None
        for pool in pools:
            if pool is not None:
                await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    @property
    def unflushed_pool(self) -> asyncpg.Pool:
        if self._unflushed is None:
            raise StoreError("store is not open")
        return self._unflushed

    @asynccontextmanager
    async def _conn(self, flush: bool = True) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with (self.pool if flush else self.unflushed_pool).acquire() as conn:
                yield conn
        except StoreError:
            raise
        except _DB_ERRORS as exc:
            raise _safe(exc) from None

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, quick: bool = False) -> list[Row]:
        self.round_trips += 1
        async with self._conn() as conn:
            return list(await conn.fetch(dollar_placeholders(sql), *params))

    async def fetch_unflushed(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One statement, its own transaction, on the connections whose commits do not wait for the disk
        (see `commit_now`): for writes whose loss in a server crash costs nothing that matters, such as
        the fleet's cap counters (`fleetcaps`), which return rows."""
        self.round_trips += 1
        async with self._conn(flush=False) as conn:
            return list(await conn.fetch(dollar_placeholders(sql), *params))

    async def execute(self, sql: str, params: Sequence[Any] = (), change: Change | None = None) -> int:
        self.round_trips += 1
        async with self._conn() as conn:
            if change is None:
                return _written(await conn.execute(dollar_placeholders(sql), *params))
            announcing = _announcing(dollar_placeholders(sql), len(params) + 1)
            count = int(await conn.fetchval(announcing, *params, change.to_payload(self.changes.origin)))
        if count:
            self.changes.publish(change)
        return count

    async def commit_now(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]], *, flush: bool = True,
                         change: Change | None = None) -> None:
        steps = [(sql, rows) for sql, rows in steps if rows]
        if not steps:
            return
        payload = change.to_payload(self.changes.origin) if change is not None else None
        combined = _one_statement(steps, payload)
        async with self._conn(flush) as conn:
            if combined is not None:  # one statement is its own transaction: one exchange, no BEGIN/COMMIT
                self.round_trips += 1
                await conn.execute(dollar_placeholders(combined[0]), *combined[1])
            elif len(steps) == 1 and payload is None:  # asyncpg's executemany is atomic on its own too
                self.round_trips += 1
                sql, rows = steps[0]
                await conn.executemany(dollar_placeholders(sql), rows)
            else:
                self.round_trips += 2 + len(steps) + (payload is not None)
                async with conn.transaction():
                    for sql, rows in steps:
                        await conn.executemany(dollar_placeholders(sql), rows)
                    if payload is not None:  # sent to the other gateways when (and only if) this commits
                        await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", payload)
        if change is not None:
            self.changes.publish(change)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        self.round_trips += 2  # BEGIN, COMMIT
        async with self._conn() as conn, conn.transaction():
            tx = _PgTx(conn, self)
            yield tx
            for change in tx.changes:
                self.round_trips += 1
                await conn.execute(f"SELECT pg_notify('{CHANNEL}', $1)", change.to_payload(self.changes.origin))
        for change in tx.changes:
            self.changes.publish(change)

    def cache_version(self) -> int | None:
        # Device lists may be kept while this gateway hears every change: the counter moves with each device
        # change (NOTIFY from any gateway) and with the "everything" that follows a reconnect. While the
        # listener is down nothing is cached; the store's TTL bounds an entry in any case.
        return self.changes.device_version if self.changes.listener_connected else None


class PostgresStore(SQLStore):
    """The store on PostgreSQL, shared by any number of gateways."""

    driver: PgDriver

    def __init__(self, url: str, keyring: KeyRing, *, min_size: int | None = None, max_size: int | None = None,
                 listen: bool = True) -> None:
        super().__init__(PgDriver(url, min_size=min_size, max_size=max_size, listen=listen), keyring)
        self.url = url

    @property
    def pool(self) -> asyncpg.Pool:
        return self.driver.pool

    def cap_ledger(self) -> PgCapLedger:
        """The fleet-wide counters behind the per-namespace caps, on this store's connections."""
        from .fleetcaps import PgCapLedger

        return PgCapLedger(self.driver)

    async def open(self) -> PostgresStore:
        await super().open()
        return self

    async def __aenter__(self) -> PostgresStore:
        return await self.open()
