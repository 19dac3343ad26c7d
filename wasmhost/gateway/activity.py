"""Per-namespace activity for the tenant: recent invocations of each function and usage counters.

The gateway runs as several processes sharing one store, so nothing here is kept only in memory: each
process buffers what it saw and writes it to the store every `FLUSH_SECONDS` (and before answering a read,
and at shutdown); readers read the store, so every process answers the same. Everything is bounded:
at most `KEEP_PER_FUNCTION` invocations per function, each at most `MAX_RECORD_BYTES` of JSON, nothing
older than `MAX_AGE_SECONDS`, and at most `MAX_PENDING` invocations buffered between flushes (more are
dropped, counted in the usage counters all the same). The buffer keeps only the newest
`KEEP_PER_FUNCTION` of each function, as the store does: a busy function's flush writes 20 rows, not
the thousand it ran, whose building and writing on the loop once a second was the p99 of an unloaded
invoke (bench/README.md, "Gateway").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from ..push.observer import PushObserver
from ..runtime import InvocationResult
from ..store.activity import ActivityStore, InvocationRow, UsageRow

__all__ = ["Activity", "TeeObserver", "invocation_outcome"]

log = logging.getLogger(__name__)

KEEP_PER_FUNCTION = 20
MAX_RECORD_BYTES = 16 * 1024
MAX_OUTPUT_CHARS = 2048
MAX_AGE_SECONDS = 24 * 3600
MAX_PENDING = 1000
FLUSH_SECONDS = 1.0


def invocation_outcome(result: InvocationResult) -> str:
    """``ok``, ``guest_error`` (handle returned non-zero) or the sandbox's error kind."""
    if result.error is not None:
        return result.error.kind
    return "ok" if result.ok else "guest_error"


def _send_summary(send: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": send.get("user_id"),
        "ok": bool(send.get("ok")),
        "devices_attempted": send.get("devices_attempted", 0),
        "devices_succeeded": send.get("devices_succeeded", 0),
        "error": send.get("error"),
    }


def invocation_record(result: InvocationResult) -> dict[str, Any]:
    """What is kept of one invocation: at most `MAX_RECORD_BYTES` once JSON-encoded; log lines past the budget
    are dropped (``logs_dropped`` says how many), the output is cut at `MAX_OUTPUT_CHARS`."""
    record: dict[str, Any] = {
        "ok": result.ok,
        "code": result.code,
        "error": result.error.to_dict() if result.error else None,
        "output": result.output[:MAX_OUTPUT_CHARS],
        "output_truncated": len(result.output) > MAX_OUTPUT_CHARS,
        "sends": [_send_summary(s) for s in result.sends[:20]],
        "fuel_used": result.fuel_used,
        "duration_ms": round(result.duration_ms, 3),
        "logs": [],
        "logs_dropped": 0,
    }
    if record["error"] and len(record["error"]["message"]) > MAX_OUTPUT_CHARS:
        record["error"]["message"] = record["error"]["message"][:MAX_OUTPUT_CHARS]
    # JSON escaping writes at most 12 bytes per character (an astral one as two \\u escapes): when even
    # that fits, every line is kept without measuring.
    chars = len(record["output"]) + sum(len(e.level) + len(e.message) + 32 for e in result.logs)
    chars += sum(len(str(s)) for s in record["sends"]) + len(str(record["error"]))
    if 12 * chars + 512 <= MAX_RECORD_BYTES:
        record["logs"] = [entry.to_dict() for entry in result.logs]
        return record
    budget = MAX_RECORD_BYTES - len(json.dumps(record))
    for n, entry in enumerate(result.logs):
        line = entry.to_dict()
        cost = len(json.dumps(line)) + 2
        if cost > budget:
            record["logs_dropped"] = len(result.logs) - n
            break
        record["logs"].append(line)
        budget -= cost
    return record


class Activity(PushObserver):
    """Buffers this process's activity and writes it to the store; a `PushObserver` for deliveries."""

    def __init__(self, store: Callable[[], ActivityStore | None], clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        #: (namespace, function) -> its newest invocations since the last flush (older ones would be pruned
        #: by the store right after being written); `_pending` counts them, at most `MAX_PENDING`.
        self._invocations: dict[tuple[str, str], deque[InvocationRow]] = {}
        self._pending = 0
        #: (namespace, minute, metric, label) -> count, and -> summed duration in ms
        self._usage: defaultdict[tuple[str, int, str, str], int] = defaultdict(int)
        self._usage_ms: defaultdict[tuple[str, int, str, str], float] = defaultdict(float)
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _count(self, namespace: str, metric: str, label: str, ms: float = 0.0) -> None:
        key = (namespace, int(self._clock() // 60), metric, label)
        self._usage[key] += 1
        if ms:
            self._usage_ms[key] += ms

    # -- what is recorded ---------------------------------------------------------------------

    def invocation(self, namespace: str, function: str, result: InvocationResult) -> None:
        outcome = invocation_outcome(result)
        self._count(namespace, "invocation", outcome, result.duration_ms)
        kept = self._invocations.get((namespace, function))
        if kept is None or len(kept) < KEEP_PER_FUNCTION:  # a new row, not one replacing the oldest
            if self._pending >= MAX_PENDING:  # rows, not functions: the buffer's memory is bounded
                return
            self._pending += 1
            if kept is None:
                kept = self._invocations[(namespace, function)] = deque(maxlen=KEEP_PER_FUNCTION)
        kept.append(InvocationRow(namespace, function, self._clock(), outcome, invocation_record(result)))

    def delivery(self, namespace: str, provider: str, outcome: str) -> None:
        self._count(namespace, "delivery", f"{provider}:{outcome}")

    # -- writing it down ----------------------------------------------------------------------

    async def flush(self) -> None:
        store = self._store()
        if store is None:
            return
        async with self._flushing:
            kept, self._invocations, self._pending = self._invocations, {}, 0
            invocations = sorted((row for rows in kept.values() for row in rows), key=lambda row: row.at)
            usage, usage_ms = self._usage, self._usage_ms
            self._usage, self._usage_ms = defaultdict(int), defaultdict(float)
            if not invocations and not usage:
                return
            rows = [UsageRow(ns, minute, metric, label, n, usage_ms.get((ns, minute, metric, label), 0.0))
                    for (ns, minute, metric, label), n in usage.items()]
            try:
                await store.record_activity(invocations, rows, KEEP_PER_FUNCTION, MAX_AGE_SECONDS, self._clock())
            except Exception as exc:  # activity is best effort: a store hiccup must not fail requests
                log.warning("could not record activity (%d invocations dropped): %s", len(invocations),
                            type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="activity-flush")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.flush()


class TeeObserver(PushObserver):
    """Hands every push event to each observer in turn."""

    def __init__(self, *observers: PushObserver) -> None:
        self.observers = observers

    def dispatcher_cache(self, namespace: str, event: str) -> None:
        for o in self.observers:
            o.dispatcher_cache(namespace, event)

    def delivery(self, namespace: str, provider: str, outcome: str) -> None:
        for o in self.observers:
            o.delivery(namespace, provider, outcome)

    def pruned(self, namespace: str, provider: str) -> None:
        for o in self.observers:
            o.pruned(namespace, provider)
