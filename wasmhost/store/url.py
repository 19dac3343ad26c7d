"""Open a store from a URL: ``sqlite:///path`` (the embedded default) or ``postgresql://…`` (the fleet)."""

from __future__ import annotations

from pathlib import Path

from .._env import env_str
from .base import Store
from .sealing import KeyRing, load_keyring

__all__ = ["DEFAULT_DB_URL", "open_store", "state_dir_for"]

DEFAULT_DB_URL = "sqlite:///./wasmhost.db"
DB_ENV = "WASMHOST_DB"


def _sqlite_path(url: str) -> Path:
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url[len("sqlite://"):]
    if not path:
        raise ValueError(f"no file in database URL {url!r}; write sqlite:///path/to/wasmhost.db")
    return Path(path)


def state_dir_for(url: str) -> Path | None:
    """Where this store keeps local state (master key, compiled-module cache): beside the SQLite file,
    or ``WASMHOST_STATE_DIR`` (default ``./.wasmhost``) for a PostgreSQL fleet."""
    if url.startswith("sqlite:"):
        return _sqlite_path(url).resolve().parent
    return Path(env_str("WASMHOST_STATE_DIR", ".wasmhost")).resolve()


async def open_store(url: str | None = None, keyring: KeyRing | None = None) -> Store:
    """Open (and migrate) the store that `url` names; `url` defaults to ``WASMHOST_DB`` then SQLite."""
    url = url or env_str(DB_ENV, DEFAULT_DB_URL)
    keyring = keyring or load_keyring(state_dir_for(url))
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return await SQLiteStore(_sqlite_path(url), keyring).open()
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # imported here: asyncpg is only loaded when a fleet uses it

        return await PostgresStore(url, keyring).open()
    # Name the scheme only: the rest of the URL may hold the database password.
    scheme = url.partition(":")[0][:32] if ":" in url else "(none)"
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://…")
