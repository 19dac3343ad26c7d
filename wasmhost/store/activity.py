"""What a namespace did recently, kept in the store so every gateway process sees the same picture:
the last few invocations of each function, and per-minute usage counters.

Both are bounded. `record_activity` writes a batch and prunes: each function keeps at most ``keep``
invocations (in the batch's transaction), invocations and counters older than ``max_age`` seconds go
(in a second one), and the caller caps each invocation's JSON (see `gateway.activity`). Mixed into
`SQLStore`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

__all__ = ["ActivityStore", "InvocationRow", "SQLActivity", "UsageRow"]

if TYPE_CHECKING:
    from .driver import Driver


@dataclass(frozen=True, slots=True)
class InvocationRow:
    namespace: str
    function: str
    at: float
    outcome: str
    #: The recorded result (logs, output, error, sends summary, fuel, duration), already size-capped.
    record: dict[str, Any]
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "outcome": self.outcome, **self.record}


@dataclass(frozen=True, slots=True)
class UsageRow:
    """``count`` events of one kind in one minute; ``total_ms`` sums their durations (0 when untimed).

    Metrics and labels: ``invocation``/<outcome> and ``delivery``/<provider>:<outcome>.
    """

    namespace: str
    minute: int
    metric: str
    label: str
    count: int
    total_ms: float = 0.0


class ActivityStore(Protocol):
    async def record_activity(
        self, invocations: Sequence[InvocationRow], usage: Sequence[UsageRow], keep: int, max_age: float, now: float
    ) -> None:
        """Add the rows (usage counts add up), then prune to `keep` per function and to `max_age`."""
        ...

    async def list_invocations(self, namespace: str, function: str, limit: int) -> list[InvocationRow]:
        """Newest first."""
        ...

    async def usage_since(self, namespace: str, minute: int) -> list[UsageRow]:
        """Counters of minutes >= `minute`, oldest first."""
        ...


_INSERT_INVOCATIONS = "INSERT INTO invocations (namespace, function, at, outcome, record_json) VALUES "
_ADD_USAGE = "INSERT INTO usage_minutes (namespace, minute, metric, label, count, total_ms) VALUES "
_ADD_USAGE_CONFLICT = (
    " ON CONFLICT (namespace, minute, metric, label) DO UPDATE SET count = usage_minutes.count + excluded.count,"
    " total_ms = usage_minutes.total_ms + excluded.total_ms"
)
# Everything of this function older than its `keep`-th newest row.
_TRIM_FUNCTION = (
    "DELETE FROM invocations WHERE namespace = ? AND function = ? AND id < (SELECT MIN(id) FROM"
    " (SELECT id FROM invocations WHERE namespace = ? AND function = ? ORDER BY id DESC LIMIT ?) AS newest)"
)
#: Rows per multi-row INSERT (SQLite allows 999 parameters in one statement).
_CHUNK = 100
_EXPIRE_INVOCATIONS = "DELETE FROM invocations WHERE at < ?"
_EXPIRE_USAGE = "DELETE FROM usage_minutes WHERE minute < ?"
_LIST = (
    "SELECT id, namespace, function, at, outcome, record_json FROM invocations WHERE namespace = ? AND function = ?"
    " ORDER BY id DESC LIMIT ?"
)
_USAGE = (
    "SELECT namespace, minute, metric, label, count, total_ms FROM usage_minutes WHERE namespace = ? AND minute >= ?"
    " ORDER BY minute, metric, label"
)


def _multi_row(prefix: str, rows: list[tuple[Any, ...]], suffix: str = "") -> list[tuple[str, tuple[Any, ...]]]:
    """Multi-row INSERTs of at most `_CHUNK` rows each: one round trip per chunk, not per row."""
    out = []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        values = ", ".join("(" + ", ".join("?" * len(chunk[0])) + ")" for _ in chunk)
        out.append((prefix + values + suffix, tuple(v for row in chunk for v in row)))
    return out


def _statements(
    invocations: Sequence[InvocationRow], usage: Sequence[UsageRow], keep: int, max_age: float, now: float
) -> list[tuple[str, tuple[Any, ...]]]:
    """The batch as statements, in the order they run. Counters of one minute are rows every gateway
    updates: they are added in one fixed order, so two gateways flushing at once cannot deadlock."""
    usage = sorted(usage, key=lambda u: (u.namespace, u.minute, u.metric, u.label))
    functions = sorted({(r.namespace, r.function) for r in invocations})
    return [
        *_multi_row(_INSERT_INVOCATIONS,
                    [(r.namespace, r.function, r.at, r.outcome, json.dumps(r.record)) for r in invocations]),
        *_multi_row(_ADD_USAGE, [(u.namespace, u.minute, u.metric, u.label, u.count, u.total_ms) for u in usage],
                    _ADD_USAGE_CONFLICT),
        *[(_TRIM_FUNCTION, (ns, fn, ns, fn, keep)) for ns, fn in functions],
    ]


def _expiry(max_age: float, now: float) -> list[tuple[str, tuple[Any, ...]]]:
    """Run in a transaction of its own: it deletes rows of any function, which a batch's trims (holding
    their own function's rows) must not wait on."""
    return [(_EXPIRE_INVOCATIONS, (now - max_age,)), (_EXPIRE_USAGE, (int((now - max_age) // 60),))]


def _invocation(row: Any) -> InvocationRow:
    return InvocationRow(row[1], row[2], float(row[3]), row[4], json.loads(row[5]), int(row[0]))


def _usage(row: Any) -> UsageRow:
    return UsageRow(row[0], int(row[1]), row[2], row[3], int(row[4]), float(row[5]))


class SQLActivity:
    """`ActivityStore` for `SQLStore`, over its driver."""

    if TYPE_CHECKING:
        driver: Driver

    async def record_activity(
        self, invocations: Sequence[InvocationRow], usage: Sequence[UsageRow], keep: int, max_age: float, now: float
    ) -> None:
        for statements in (_statements(invocations, usage, keep, max_age, now), _expiry(max_age, now)):
            async with self.driver.transaction() as tx:
                for sql, params in statements:
                    await tx.execute(sql, params)

    async def list_invocations(self, namespace: str, function: str, limit: int) -> list[InvocationRow]:
        return [_invocation(r) for r in await self.driver.fetch(_LIST, (namespace, function, limit))]

    async def usage_since(self, namespace: str, minute: int) -> list[UsageRow]:
        return [_usage(r) for r in await self.driver.fetch(_USAGE, (namespace, minute))]
