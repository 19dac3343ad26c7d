"""The `backend` fixture: every store contract test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.store.pg import drop_schema, pg_database, schema_url  # noqa: F401 (pg_database is a fixture)
from wasmhost.store import KeyRing, SQLiteStore, Store
from wasmhost.store.postgres import PostgresStore


class Backend:
    """Opens stores on one database and reads/writes its rows directly, the same way for both engines.

    Raw SQL uses ``?`` placeholders; they become ``$n`` on PostgreSQL.
    """

    def __init__(self, name: str, location: str) -> None:
        self.name = name
        self.location = location  # SQLite file path or PostgreSQL URL
        self.opened: list[Store] = []

    async def open(self, keyring: KeyRing) -> Any:
        store: Any
        if self.name == "sqlite":
            store = await SQLiteStore(self.location, keyring).open()
        else:
            store = await PostgresStore(self.location, keyring, min_size=1, max_size=4).open()
        self.opened.append(store)
        return store

    def _pg_sql(self, sql: str) -> str:
        parts = sql.split("?")
        return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))

    async def fetchone(self, sql: str, *params: Any) -> tuple[Any, ...] | None:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as db:
                row = db.execute(sql, params).fetchone()
            return tuple(row) if row is not None else None
        conn = await asyncpg.connect(self.location)
        try:
            got = await conn.fetchrow(self._pg_sql(sql), *params)
        finally:
            await conn.close()
        return tuple(got) if got is not None else None

    async def fetchall(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as db:
                return [tuple(r) for r in db.execute(sql, params).fetchall()]
        conn = await asyncpg.connect(self.location)
        try:
            return [tuple(r) for r in await conn.fetch(self._pg_sql(sql), *params)]
        finally:
            await conn.close()

    async def execute(self, sql: str, *params: Any) -> None:
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as db:
                db.execute(sql, params)
            return
        conn = await asyncpg.connect(self.location)
        try:
            await conn.execute(self._pg_sql(sql), *params)
        finally:
            await conn.close()

    async def aclose(self) -> None:
        for store in self.opened:
            await store.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "wasmhost.db"))
        try:
            yield b
        finally:
            await b.aclose()
        return
    async with _postgres(request.getfixturevalue("pg_database")) as b:
        yield b


@pytest.fixture
async def pg_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """PostgreSQL only: for what needs several gateways on one database."""
    async with _postgres(request.getfixturevalue("pg_database")) as b:
        yield b


@asynccontextmanager
async def _postgres(database: str) -> AsyncIterator[Backend]:
    url, schema = await schema_url(database)
    b = Backend("postgresql", url)
    try:
        yield b
    finally:
        await b.aclose()
        await drop_schema(database, schema)


@pytest.fixture
async def store(backend: Backend, keyring: KeyRing) -> Any:
    """A fresh, open store of the backend under test (closed by the backend fixture)."""
    return await backend.open(keyring)
