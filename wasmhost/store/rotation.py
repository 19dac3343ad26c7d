"""Key rotation: re-seal every secret at rest under the key ring's newest master key, while gateways serve.

Each sealed column is walked in primary-key order, a batch at a time. A value is replaced only if it
still holds what was read (compare-and-swap), so a tenant's write during the rotation is never
overwritten; values that changed meanwhile are checked again in the final verification pass. Values stay
bound to their purpose and row (the AAD is unchanged), and the token-fingerprint key in ``meta`` is
re-sealed, not regenerated, so fingerprints and token exclusivity survive the rotation.

Gateways keep reading both versions throughout because their key ring holds both; see docs/fleet.md for
the order of steps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ._rows import AUTH, CONFIG_EXPO_TOKEN, CONFIG_NTFY_TOKEN, CREDENTIALS, FINGERPRINT_KEY, TOKENS
from .sealing import KeyRing, SealError
from .webhooks import WEBHOOK_SECRET

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Resealable",
    "RotationReport",
    "SealedColumn",
    "SealedRow",
    "rotate_keys",
    "sealed_columns",
]

LOG = logging.getLogger("wasmhost.store")

#: Rows read and re-sealed per transaction: small enough to keep row locks short on a busy fleet.
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class SealedRow:
    key: tuple[str, ...]
    context: str
    sealed: str


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """Where one kind of sealed value lives, and how its AAD context is formed from its row.

    Identifiers are fixed in `sealed_columns`, never user input, so stores may put them into SQL.
    """

    table: str
    column: str
    key: tuple[str, ...]
    purpose: str
    #: Columns whose values, joined by NUL, are the AAD context the value was sealed with.
    context: tuple[str, ...] = ()
    #: Extra fixed filter (trusted SQL).
    where: str = ""

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column}"

    def row(self, values: Sequence[Any]) -> SealedRow:
        """Build a row from ``key columns + context columns + sealed value``, as `page_sql` selects them."""
        n = len(self.key)
        ctx = values[n:n + len(self.context)]
        return SealedRow(tuple(str(v) for v in values[:n]), "\x00".join(str(v) for v in ctx), str(values[-1]))


def sealed_columns() -> tuple[SealedColumn, ...]:
    """Every sealed column of the schema (the fingerprint key first: everything else is looked up by it)."""
    return (
        SealedColumn("meta", "value", ("key",), FINGERPRINT_KEY, where=f"key = '{FINGERPRINT_KEY}'"),
        SealedColumn("push_config", "ntfy_auth_token_sealed", ("namespace",), CONFIG_NTFY_TOKEN, ("namespace",)),
        SealedColumn("push_config", "expo_access_token_sealed", ("namespace",), CONFIG_EXPO_TOKEN, ("namespace",)),
        SealedColumn("push_credentials", "document_sealed", ("namespace", "provider"), CREDENTIALS,
                     ("namespace", "provider")),
        SealedColumn("namespace_auth", "settings_sealed", ("namespace",), AUTH, ("namespace",)),
        SealedColumn("devices", "token_sealed", ("id",), TOKENS, ("namespace", "id")),
        SealedColumn("webhooks", "secret_sealed", ("namespace",), WEBHOOK_SECRET, ("namespace",)),
    )


def page_sql(column: SealedColumn, after: tuple[str, ...] | None, limit: int) -> tuple[str, list[Any]]:
    """A keyset-paged SELECT of ``key…, context…, value`` (non-empty values only) for either dialect."""
    keys = ", ".join(column.key)
    selected = ", ".join((*column.key, *column.context, column.column))
    where = [f"{column.column} != ''"]
    if column.where:
        where.append(column.where)
    args: list[Any] = []
    if after is not None:
        marks = ", ".join("?" for _ in after)
        where.append(f"({keys}) > ({marks})")
        args.extend(after)
    args.append(limit)
    sql = (f"SELECT {selected} FROM {column.table} WHERE {' AND '.join(where)}"
           f" ORDER BY {keys} LIMIT ?")
    return sql, args


def swap_sql(column: SealedColumn) -> str:
    """``UPDATE … SET value = new WHERE value = old AND key = …``; parameters: new, old, then the key."""
    keys = " AND ".join(f"{k} = ?" for k in column.key)
    col = column.column
    return f"UPDATE {column.table} SET {col} = ? WHERE {col} = ? AND {keys}"


@runtime_checkable
class Resealable(Protocol):
    """What a store offers the rotation: paged reads of sealed values and compare-and-swap writes."""

    async def sealed_page(self, column: SealedColumn, after: tuple[str, ...] | None, limit: int) -> list[SealedRow]: ...
    async def swap_sealed(self, column: SealedColumn, swaps: Sequence[tuple[tuple[str, ...], str, str]]) -> int: ...


@dataclass
class RotationReport:
    """What a rotation did. `remaining` counts values still under an older key after the verification pass
    (a gateway without the new key wrote them meanwhile, or they do not open): run the rotation again."""

    key_version: int
    resealed: int = 0
    already_current: int = 0
    unreadable: int = 0
    remaining: int = 0
    by_column: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and self.unreadable == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_version": self.key_version,
            "resealed": self.resealed,
            "already_current": self.already_current,
            "unreadable": self.unreadable,
            "remaining": self.remaining,
            "complete": self.complete,
            "by_column": dict(self.by_column),
        }


async def rotate_keys(
    store: object, new_keyring: KeyRing, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> RotationReport:
    """Re-seal every sealed value under ``new_keyring.current``; `new_keyring` must also hold the old keys.

    `store` is any opened backend (`open_store(url, new_keyring)`). Safe to run while gateways serve and
    safe to run again (values already current are skipped).
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    if not isinstance(store, Resealable):
        raise TypeError(f"{type(store).__name__} does not support key rotation")
    report = RotationReport(new_keyring.current)
    for column in sealed_columns():
        await _rotate_column(store, new_keyring, column, batch_size, report)
    for column in sealed_columns():  # verification: anything written under an old key meanwhile?
        async for row in _rows(store, column, batch_size):
            if new_keyring.needs_reseal(row.sealed):
                report.remaining += 1
    if report.remaining or report.unreadable:
        LOG.warning("keys: rotation to version %d left %d value(s) under older keys and %d unreadable",
                    report.key_version, report.remaining, report.unreadable)
    else:
        LOG.info("keys: every sealed value is now under master key version %d (%d re-sealed)",
                 report.key_version, report.resealed)
    return report


async def _rows(store: Resealable, column: SealedColumn, batch_size: int) -> AsyncIterator[SealedRow]:
    after: tuple[str, ...] | None = None
    while True:
        rows = await store.sealed_page(column, after, batch_size)
        for row in rows:
            yield row
        if len(rows) < batch_size:
            return
        after = rows[-1].key


async def _rotate_column(
    store: Resealable, keyring: KeyRing, column: SealedColumn, batch_size: int, report: RotationReport
) -> None:
    after: tuple[str, ...] | None = None
    while True:
        rows = await store.sealed_page(column, after, batch_size)
        swaps: list[tuple[tuple[str, ...], str, str]] = []
        for row in rows:
            if not keyring.needs_reseal(row.sealed):
                report.already_current += 1
                continue
            try:
                plain = keyring.open(row.sealed, column.purpose, row.context)
            except SealError as exc:
                report.unreadable += 1
                LOG.error("keys: a value in %s does not open and was left as is: %s", column.label, exc)
                continue
            swaps.append((row.key, row.sealed, keyring.seal(plain, column.purpose, row.context)))
        if swaps:
            done = await store.swap_sealed(column, swaps)
            report.resealed += done
            report.by_column[column.label] = report.by_column.get(column.label, 0) + done
        if len(rows) < batch_size:
            return
        after = rows[-1].key
