"""The seam between the one SQL store (`sql.SQLStore`) and a database engine.

A driver runs statements written once, with ``?`` placeholders (a PostgreSQL driver rewrites them to
``$n``), and offers transactions, announcements of committed changes, and whatever fast path its
engine allows. It never decides what a row means: that is the store's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from typing import Any, Protocol

from .base import StoreError
from .changes import Change, LocalChangeFeed

__all__ = ["Driver", "IntegrityError", "Row", "Tx", "dollar_placeholders"]

Row = Sequence[Any]


class IntegrityError(StoreError):
    """A constraint refused the statement: `foreign_key` (e.g. no such namespace) or `unique`."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"constraint violated: {kind}")
        self.kind = kind


class Tx(Protocol):
    """An open transaction: statements run inside it, and it commits when the block exits cleanly."""

    #: Appended to a SELECT that the transaction will update (empty where the engine locks it anyway).
    for_update: str
    #: Appended to a SELECT that claims rows other transactions may be claiming too: they skip the rows
    #: this one holds instead of waiting (empty where a transaction holds the whole file).
    skip_locked: str

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it wrote."""
        ...

    async def lock(self, key: int) -> None:
        """Serialise with every other transaction taking the same key until this one ends."""
        ...

    def announce(self, change: Change) -> None:
        """Announce `change` when (and only if) this transaction commits."""
        ...


class Driver(Protocol):
    dialect: str

    @property
    def changes(self) -> LocalChangeFeed:
        """Where committed changes are announced (to this process; a fleet driver also to the others)."""
        ...

    async def open(self) -> None: ...

    async def started(self) -> None:
        """Called once the schema is current: start what needs it (listeners, side connections)."""
        ...

    async def aclose(self) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, quick: bool = False) -> list[Row]:
        """Rows of one read. `quick` marks a small indexed read on the send path, which a driver may
        serve without leaving the event loop's thread."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = (), change: Change | None = None) -> int:
        """One statement, its own transaction; returns the rows written and, if any were, announces `change`."""
        ...

    async def commit_now(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]], *, flush: bool = True,
                         change: Change | None = None) -> None:
        """Run each ``(statement, rows)`` step for all its rows, every step in one transaction committed
        before this returns (the send path's writes; a driver may commit them without leaving the loop),
        then announce `change`, if given (a fleet driver in the same transaction).

        With `flush` False the write may be lost in a crash of the database server (never half of it, and
        never without what was committed before it): for records whose loss only means a retry, such as a
        delivery's outcome while its row still holds a lease. A driver may then skip waiting for the disk."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    def cache_version(self) -> int | None:
        """A number that changes whenever anyone else commits, or None when the driver cannot tell
        (then the store caches nothing)."""
        ...


@lru_cache(maxsize=512)
def dollar_placeholders(sql: str) -> str:
    """``?`` → ``$1, $2 …`` (statements are fixed strings with no ``?`` inside literals)."""
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
