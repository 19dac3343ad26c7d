"""A real PostgreSQL for tests: one fresh database per test session, one fresh schema per test.

The server comes from ``WASMHOST_TEST_PG`` (default: the local one CI starts). If it cannot be reached
the PostgreSQL tests are skipped with the reason; CI's setup script fails first if it cannot start it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

__all__ = ["SERVER_URL", "database_url", "drop_schema", "pg_database", "run_sync", "schema_url"]

T = TypeVar("T")

SERVER_URL = os.environ.get("WASMHOST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url(server_url: str, database: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + database, query=""))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from any context (a fixture may be set up inside a running loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(SERVER_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_sync(run())


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a database created for this test session and dropped after it."""
    name = f"wasmhost_test_{secrets.token_hex(6)}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {SERVER_URL} ({type(exc).__name__}); "
                    "start it (see .ci/setup.d/20-postgres.sh) or set WASMHOST_TEST_PG")
    try:
        yield database_url(SERVER_URL, name)
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def schema_url(database: str) -> tuple[str, str]:
    """A fresh schema in `database`: (store URL with that search_path, schema name)."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database, timeout=5)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    return f"{database}?search_path={schema}", schema


async def drop_schema(database: str, schema: str) -> None:
    conn = await asyncpg.connect(database, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
