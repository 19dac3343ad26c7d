"""Store errors never quote a database password (operators ship startup errors to their logs)."""

from __future__ import annotations

import os

import pytest

from wasmhost.store import open_store
from wasmhost.store.sealing import KeyRing

SECRET = "s3cret-db-password"


@pytest.mark.parametrize("url", [
    f"postgresql+asyncpg://wasmhost:{SECRET}@db.internal/wasmhost",
    f"mysql://wasmhost:{SECRET}@db.internal/wasmhost",
    f"pgsql://wasmhost:{SECRET}@db.internal:5432/wasmhost",
])
async def test_an_unsupported_database_url_error_does_not_echo_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL scheme") as info:
        await open_store(url, KeyRing({1: os.urandom(32)}))
    assert SECRET not in str(info.value)
