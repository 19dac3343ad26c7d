"""The cap table shared by a gateway's worker processes: counts and buckets are one for every process,
a dead worker's slots come back, and a namespace that hashes into a full set is refused, not untracked."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator

import pytest

from wasmhost.gateway import sharedcaps
from wasmhost.gateway.sharedcaps import CapTable


@pytest.fixture
def table() -> Iterator[CapTable]:
    t = CapTable.create()
    t.attach(0)
    yield t
    t.close()
    t.unlink()


def _begin_many(table: CapTable, worker: int, namespace: str, n: int, out: mp.SimpleQueue) -> None:  # type: ignore[type-arg]
    table.attach(worker)
    out.put(sum(table.try_begin(namespace, 1000, 1000) is None for _ in range(n)))


def test_invocation_counts_are_shared_by_forked_processes(table: CapTable) -> None:
    ctx = mp.get_context("fork")
    out: mp.SimpleQueue[int] = ctx.SimpleQueue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_begin_many, args=(table, w, "acme", 300, out)) for w in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sorted(out.get() for _ in procs) == [300, 300, 300]
    assert table.in_progress("acme") == 900 and table.in_progress() == 900  # no update lost to a race
    assert table.try_begin("acme", 900, 10_000) == "namespace"
    assert table.reap(2) == 300
    assert table.in_progress("acme") == 600 and table.in_progress() == 600
    assert table.try_begin("acme", 601, 10_000) is None


def test_caps_per_namespace_and_for_the_gateway(table: CapTable) -> None:
    assert table.try_begin("a", 2, 3) is None
    assert table.try_begin("a", 2, 3) is None
    assert table.try_begin("a", 2, 3) == "namespace"
    assert table.try_begin("b", 2, 3) is None
    assert table.try_begin("b", 2, 3) == "gateway"
    table.end("a")
    assert table.try_begin("b", 2, 3) is None
    assert table.in_progress("a") == 1 and table.in_progress("b") == 2
    table.end("unknown")  # never began: nothing to give back, nothing goes negative
    assert table.in_progress() == 3


def test_token_bucket_is_shared_and_refills(table: CapTable) -> None:
    now = [1000.0]
    other = CapTable(table.path, timer=lambda: now[0])
    other.attach(1)
    table._timer = lambda: now[0]  # type: ignore[method-assign]
    assert all(table.take_token("ns", 6) for _ in range(3))
    assert all(other.take_token("ns", 6) for _ in range(3))
    assert not table.take_token("ns", 6) and not other.take_token("ns", 6)
    now[0] += 10.0  # 6 per minute: one token every 10 s
    assert other.take_token("ns", 6)
    assert not table.take_token("ns", 6)
    assert table.tokens("fresh", 6) == 6.0
    other.close()


def test_a_full_set_refuses_new_namespaces_until_one_finishes(table: CapTable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharedcaps, "_key", lambda ns: 7 + sharedcaps.SETS * (int(ns[1:]) + 1))  # one set
    names = [f"n{i}" for i in range(sharedcaps.WAYS)]
    for name in names:
        assert table.try_begin(name, 5, 10_000) is None
    assert table.try_begin("n99", 5, 10_000) == "table"
    assert not table.take_token("n99", 60)
    table.end("n3")
    assert table.try_begin("n99", 5, 10_000) is None  # n3's idle entry is reused
    assert table.in_progress("n99") == 1 and table.in_progress("n0") == 1


def test_attach_checks_the_worker_index(table: CapTable) -> None:
    with pytest.raises(ValueError):
        table.attach(sharedcaps.MAX_WORKERS)
    assert os.path.exists(table.path)
