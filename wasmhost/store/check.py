"""The store's own consistency checks: what must hold of the rows whatever happened to the process.

Run after a crash (``wasmhost check``) or by tests that kill a gateway mid-write. Every write of the
store is one transaction, so a crash at any point must leave only whole rows; these checks say so
row by row, beyond what the engine checks itself (SQLite's ``PRAGMA integrity_check`` and
``foreign_key_check`` are run too):

* every sealed value opens with the current key ring, under the context of the row it is in;
* every device's token fingerprint is its token's, and no token has two owners in a namespace;
* every function's module bytes hash to its ``sha256`` and have its ``size``;
* every outbox message and invocation record is a JSON object;
* every row of a namespace names a namespace that exists.

Problems name the table and the row's key, never a secret.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._rows import TOKENS, device_context
from .rotation import sealed_columns
from .sealing import SealError
from .sql import SQLStore

__all__ = ["check_store"]

#: Tables whose rows belong to a namespace (``namespace`` column).
_NAMESPACED = ("push_config", "push_credentials", "devices", "outbox", "functions", "api_keys", "namespace_auth",
               "invocations", "usage_minutes")


async def check_store(store: SQLStore) -> list[str]:
    """Every problem found, as one line each; empty when the store is consistent."""
    problems: list[str] = []
    fetch = store.driver.fetch
    if store.dialect == "sqlite":
        verdict = [str(r[0]) for r in await fetch("PRAGMA integrity_check")]
        if verdict != ["ok"]:
            problems += [f"integrity_check: {line}" for line in verdict[:20]]
        for row in await fetch("PRAGMA foreign_key_check"):
            problems.append(f"foreign_key_check: {row[0]} row {row[1]} refers to a missing {row[2]}")
    tables = await _tables(store)
    problems += await _sealed_values(store)
    problems += await _devices(store)
    problems += await _functions(store)
    for table, column in (("outbox", "message_json"), ("invocations", "record_json")):
        if table in tables:
            problems += await _json_objects(store, table, column)
    for table in _NAMESPACED:
        if table in tables:
            [(orphans,)] = await fetch(
                f"SELECT COUNT(*) FROM {table} WHERE namespace NOT IN (SELECT name FROM namespaces)"
            )
            if orphans:
                problems.append(f"{table}: {orphans} row(s) of a namespace that does not exist")
    return problems


async def _tables(store: SQLStore) -> set[str]:
    if store.dialect == "sqlite":
        rows = await store.driver.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await store.driver.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {str(r[0]) for r in rows}


async def _sealed_values(store: SQLStore) -> list[str]:
    problems = []
    for column in sealed_columns():
        selected = ", ".join((*column.key, *column.context, column.column))
        where = f" AND {column.where}" if column.where else ""
        rows = await store.driver.fetch(f"SELECT {selected} FROM {column.table} WHERE {column.column} != ''{where}")
        for values in rows:
            row = column.row(values)
            try:
                store.keyring.open(row.sealed, column.purpose, row.context)
            except SealError:
                problems.append(f"{column.label}: the value of row {'/'.join(row.key)} does not open")
    return problems


async def _devices(store: SQLStore) -> list[str]:
    problems = []
    owners: dict[tuple[str, str], str] = {}
    rows = await store.driver.fetch("SELECT id, namespace, token_sealed, token_fp FROM devices")
    for row_id, namespace, sealed, fp in rows:
        try:
            token = store.keyring.open(sealed, TOKENS, device_context(namespace, row_id)).decode()
        except (SealError, UnicodeDecodeError):
            continue  # reported with the sealed values
        if store.token_fingerprint(namespace, token) != fp:
            problems.append(f"devices: row {row_id}'s token_fp is not its token's")
        other = owners.setdefault((namespace, fp), row_id)
        if other != row_id:
            problems.append(f"devices: rows {other} and {row_id} hold the same token in namespace {namespace}")
    return problems


async def _functions(store: SQLStore) -> list[str]:
    problems = []
    for namespace, name in await store.driver.fetch("SELECT namespace, name FROM functions"):
        [(sha, size, module)] = await store.driver.fetch(
            "SELECT sha256, size, module FROM functions WHERE namespace = ? AND name = ?", (namespace, name)
        )
        data = bytes(module)
        if hashlib.sha256(data).hexdigest() != sha or len(data) != size:
            problems.append(f"functions: {namespace}/{name}'s module does not match its sha256 and size")
    return problems


async def _json_objects(store: SQLStore, table: str, column: str) -> list[str]:
    problems = []
    for row_id, text in await store.driver.fetch(f"SELECT id, {column} FROM {table}"):
        try:
            doc: Any = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            problems.append(f"{table}: row {row_id}'s {column} is not a JSON object")
    return problems
