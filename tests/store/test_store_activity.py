"""Recent invocations and usage counters, on SQLite and PostgreSQL: counts add up across writers,
each function keeps its newest rows only, and old rows expire."""

from __future__ import annotations

from typing import Any

import pytest

from wasmhost.store.activity import InvocationRow, UsageRow

pytestmark = pytest.mark.asyncio

NOW = 1_800_000_000.0
DAY = 86400.0


def _inv(ns: str, fn: str, n: int, at: float = NOW) -> InvocationRow:
    record = {"n": n, "logs": [{"level": "info", "message": f"#{n}"}]}
    return InvocationRow(ns, fn, at, "ok" if n % 2 else "trap", record)


async def test_invocations_keep_the_newest_per_function(store: Any) -> None:
    for ns in ("acme", "other"):
        await store.create_namespace(ns)
    await store.record_activity([_inv("acme", "f", n) for n in range(3)], [], 4, DAY, NOW)
    await store.record_activity([_inv("acme", "f", n) for n in range(3, 7)] + [_inv("acme", "g", 0)], [], 4, DAY, NOW)
    await store.record_activity([_inv("other", "f", 99)], [], 4, DAY, NOW)
    rows = await store.list_invocations("acme", "f", 10)
    assert [r.record["n"] for r in rows] == [6, 5, 4, 3]  # newest first, bounded to 4
    assert rows[0].to_dict()["outcome"] == "trap" and rows[0].to_dict()["logs"][0]["message"] == "#6"
    assert [r.record["n"] for r in await store.list_invocations("acme", "g", 10)] == [0]
    assert [r.record["n"] for r in await store.list_invocations("other", "f", 10)] == [99]
    assert [r.record["n"] for r in await store.list_invocations("acme", "f", 2)] == [6, 5]


async def test_usage_adds_up_and_old_activity_expires(store: Any) -> None:
    await store.create_namespace("acme")
    minute = int(NOW // 60)
    old = minute - 24 * 60 - 5
    first = [UsageRow("acme", minute, "delivery", "outbox:success", 2),
             UsageRow("acme", old, "invocation", "ok", 1, 5.0)]
    await store.record_activity([_inv("acme", "f", 1, at=NOW - 2 * DAY)], first, 20, 2 * DAY + 60, NOW)
    second = [UsageRow("acme", minute, "delivery", "outbox:success", 3),
              UsageRow("acme", minute, "invocation", "ok", 2, 7.5)]
    await store.record_activity([], second, 20, 2 * DAY + 60, NOW)
    got = {(u.minute, u.metric, u.label): (u.count, u.total_ms) for u in await store.usage_since("acme", old)}
    assert got[(minute, "delivery", "outbox:success")] == (5, 0.0)
    assert got[(minute, "invocation", "ok")] == (2, 7.5)
    assert got[(old, "invocation", "ok")] == (1, 5.0)
    assert len(await store.list_invocations("acme", "f", 10)) == 1

    await store.record_activity([], [], 20, DAY, NOW)  # a day's retention: the old minute and row go
    assert {u.minute for u in await store.usage_since("acme", old)} == {minute}
    assert await store.list_invocations("acme", "f", 10) == []
    assert await store.usage_since("acme", minute + 1) == []
