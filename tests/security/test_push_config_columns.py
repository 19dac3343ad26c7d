"""A sealed push-config secret moved into the other column does not open (each column has its own purpose)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wasmhost.store import PushConfig, SQLiteStore, StoreError


async def test_swapped_push_config_secrets_do_not_open(sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    await sqlite_store.create_namespace("acme")
    await sqlite_store.put_push_config(PushConfig("acme", "https://ntfy.example", "ntfy-secret", "expo-secret"))
    db = sqlite3.connect(tmp_path / "wasmhost.db")
    db.execute("UPDATE push_config SET ntfy_auth_token_sealed = expo_access_token_sealed, "
               "expo_access_token_sealed = '' WHERE namespace = 'acme'")
    db.commit()
    with pytest.raises(StoreError, match="does not open"):
        await sqlite_store.get_push_config("acme")
