"""Prometheus metrics, in a registry owned by one app (tests run several apps in one process).

No metric carries a namespace label: /metrics is for the operator, and per-tenant labels would both
leak tenant names and grow without bound.

A gateway of several worker processes answers ``/metrics`` from whichever worker the scrape reaches, so
each worker leaves a snapshot of its own registry in the group's folder (every `SNAPSHOT_SECONDS`, and
right before it answers a scrape) and the answer sums every worker's samples. A snapshot is named by the
worker's index, so the folder holds one file per worker however often workers are replaced; a
replacement's counters start again from zero, as Prometheus expects of a restarted process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ..push.observer import PushObserver
from ..runtime import InvocationResult
from ..services import Services
from .fleetcaps import FleetSends, FleetSlots

__all__ = ["CONTENT_TYPE_LATEST", "ChangeFeedCollector", "FleetCapsCollector", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Observer(PushObserver):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def dispatcher_cache(self, namespace: str, event: str) -> None:
        self.m.dispatcher_cache.labels(event=event).inc()

    def delivery(self, namespace: str, provider: str, outcome: str) -> None:
        self.m.deliveries.labels(provider=provider, outcome=outcome).inc()

    def pruned(self, namespace: str, provider: str) -> None:
        self.m.pruned.labels(provider=provider).inc()


#: Seconds between a worker's metrics snapshots (a scrape is at most this stale for the other workers).
SNAPSHOT_SECONDS = 1.0


class Metrics:
    def __init__(self, shared_dir: Path | None = None, worker: int = 0) -> None:
        self.shared_dir = shared_dir
        self.worker = worker
        self._timer: asyncio.TimerHandle | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter(
            "wasmhost_invocations", "Function invocations by outcome (ok, guest_error, or the error kind)",
            ["outcome"], registry=r,
        )
        self.traps = Counter("wasmhost_traps", "Guests stopped by the sandbox, by kind", ["kind"], registry=r)
        self.latency = Histogram(
            "wasmhost_invocation_duration_seconds", "Guest run time per invocation", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("wasmhost_invocations_in_flight", "Invocations running or queued", registry=r)
        self.sends = Counter("wasmhost_sends", "Sends started over HTTP or by guests, by outcome", ["outcome"],
                             registry=r)
        self.deliveries = Counter(
            "wasmhost_push_deliveries", "Per-device delivery attempts' final outcomes by provider",
            ["provider", "outcome"], registry=r,
        )
        self.pruned = Counter("wasmhost_push_dead_tokens_pruned", "Dead device tokens removed", ["provider"],
                              registry=r)
        self.dispatcher_cache = Counter(
            "wasmhost_push_dispatcher_cache", "Dispatcher cache events (hit, miss, build)", ["event"], registry=r
        )
        self.rate_limited = Counter("wasmhost_rate_limited", "Requests refused by a per-namespace cap", ["cap"],
                                    registry=r)
        self.observer: PushObserver = _Observer(self)

    def record_invocation(self, result: InvocationResult) -> None:
        outcome: str
        if result.error is not None:
            outcome = result.error.kind
            if result.error.kind in ("out_of_fuel", "timeout", "memory", "trap"):
                self.traps.labels(kind=result.error.kind).inc()
        else:
            outcome = "ok" if result.ok else "guest_error"
        self.invocations.labels(outcome=outcome).inc()
        self.latency.observe(result.duration_ms / 1000.0)
        for send in result.sends:
            self.sends.labels(outcome=_send_outcome(send)).inc()

    def render(self) -> bytes:
        own = generate_latest(self.registry)
        if self.shared_dir is None:
            return own
        self._snapshot(own)
        return _merge(self.shared_dir)

    def _snapshot(self, text: bytes | None = None) -> None:
        assert self.shared_dir is not None
        path = self.shared_dir / f"worker-{self.worker}.prom"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(generate_latest(self.registry) if text is None else text)
        tmp.replace(path)

    def start(self) -> None:
        """Leave a snapshot every `SNAPSHOT_SECONDS` on the running loop (for a worker of a group)."""
        if self.shared_dir is None:
            return
        loop = asyncio.get_running_loop()

        def tick() -> None:
            try:
                self._snapshot()
            except OSError:
                pass  # the folder is gone: the gateway is stopping
            self._timer = loop.call_later(SNAPSHOT_SECONDS, tick)

        tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.shared_dir is not None:
            try:
                self._snapshot()  # the final totals of this worker
            except OSError:
                pass


#: Gauges that are a reading of state every worker shares (the database's queue), not a count of what one
#: worker did: the workers' readings are of one thing, so the answer is the latest-looking (largest) one,
#: never their sum (which read N times the queue's depth with N workers).
SHARED_READINGS = frozenset({"wasmhost_delivery_queue_depth", "wasmhost_delivery_oldest_queued_seconds"})


def _merge(folder: Path) -> bytes:
    """Every worker's snapshot, summed sample by sample (`SHARED_READINGS`: the largest)."""
    families: dict[str, tuple[str, str]] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for path in sorted(folder.glob("worker-*.prom")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, (family.type, family.documentation))
            samples = sums.setdefault(family.name, {})
            for sample in family.samples:
                if sample.name.endswith("_created"):  # a creation time: no sum of them means anything
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if family.name in SHARED_READINGS:
                    samples[key] = max(samples.get(key, sample.value), sample.value)
                else:
                    samples[key] = samples.get(key, 0.0) + sample.value
    lines: list[str] = []
    for name, (kind, doc) in families.items():
        lines.append(f"# HELP {name} {_escape_help(doc)}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample_name, labels), value in sums[name].items():
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{label_text}}} {_number(value)}" if labels else
                         f"{sample_name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)) + ".0"
    return repr(value)


def _send_outcome(send: dict[str, object]) -> str:
    error = send.get("error")
    if isinstance(error, dict):
        return str(error.get("kind", "error"))
    return "ok" if send.get("ok") else "partial"


class ChangeFeedCollector:
    """Prometheus view of the change feed (register it on the gateway's registry): whether this gateway
    hears other gateways' changes, and how often it lost and regained that."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []  # names are only known once the services are open; collect() is authoritative

    def collect(self) -> Iterator[Metric]:
        svc = self._services()
        if svc is None:
            return
        feed = svc.changes
        yield CounterMetricFamily("wasmhost_change_invalidations", "Dispatcher invalidations caused by announced "
                                  "changes (local or from other gateways)", value=svc.invalidations)
        if feed is None or not hasattr(feed, "listener_connected"):
            return
        yield GaugeMetricFamily("wasmhost_change_listener_connected", "1 while the LISTEN connection that carries "
                                "other gateways' changes is up", value=int(bool(feed.listener_connected)))
        for name, attr, text in (
            ("wasmhost_change_listener_disconnects", "disconnects", "LISTEN connections lost"),
            ("wasmhost_change_listener_reconnects", "reconnects",
             "LISTEN connections re-established (each followed by invalidating every cache once)"),
            ("wasmhost_changes_received", "received", "Change notifications received from other gateways"),
        ):
            yield CounterMetricFamily(name, text, value=int(getattr(feed, attr, 0)))


class FleetCapsCollector:
    """Prometheus view of the fleet's per-namespace caps (PostgreSQL only): the statements this process made
    to draw send grants and change slot leases. They follow grants used up and concurrency changes, not the
    request rate; a rate close to the request rate means grants too small for the traffic."""

    def __init__(self, fleet: Callable[[], tuple[FleetSends | None, FleetSlots | None]]) -> None:
        self._fleet = fleet

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        sends, slots = self._fleet()
        if sends is None or slots is None:
            return
        family = CounterMetricFamily("wasmhost_fleet_cap_requests", "Statements to the fleet's cap counters "
                                     "(send grants; slot leases, returns and renewals)", labels=["kind"])
        family.add_metric(["send_grant"], sends.grants)
        family.add_metric(["slot_lease"], slots.requests)
        yield family


class DeliveryQueueCollector:
    """Prometheus view of durable delivery: queue depth, age of the oldest queued delivery (both as the
    worker last read them, every few seconds, across every gateway on the database) and this process's
    state transitions."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        svc = self._services()
        queue = svc.manager.queue if svc is not None else None
        if queue is None:
            return
        yield GaugeMetricFamily("wasmhost_delivery_queue_depth", "Deliveries queued or being sent (all gateways)",
                                value=queue.depth)
        age = time.time() - queue.oldest_at if queue.oldest_at else 0.0
        yield GaugeMetricFamily("wasmhost_delivery_oldest_queued_seconds",
                                "Age of the oldest send with a delivery still queued or being sent", value=age)
        transitions = CounterMetricFamily("wasmhost_delivery_transitions",
                                          "Deliveries that reached each state in this process", labels=["state"])
        for state, n in sorted(queue.transitions.items()):
            transitions.add_metric([state], n)
        yield transitions


class WebhookCollector:
    """Prometheus view of tenant webhooks: this process's attempts by outcome, events dropped by reason and
    endpoints disabled (counters: a gateway's workers' snapshots are summed; a database-wide gauge would
    have to be listed in `SHARED_READINGS`)."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        svc = self._services()
        worker = svc.webhooks if svc is not None else None
        if worker is None:
            return
        attempts = CounterMetricFamily("wasmhost_webhook_attempts", "Webhook POSTs by outcome (success, http_error,"
                                       " timeout, unreachable, blocked, no_secret)", labels=["outcome"])
        for outcome, n in sorted(worker.attempts.items()):
            attempts.add_metric([outcome], n)
        yield attempts
        dropped = CounterMetricFamily("wasmhost_webhook_events_dropped", "Webhook events given up, by reason"
                                      " (cap: over the per-namespace cap, disabled: the endpoint was disabled)",
                                      labels=["reason"])
        for reason, n in sorted(worker.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield CounterMetricFamily("wasmhost_webhook_endpoints_disabled", "Webhooks disabled for failing too long",
                                  value=worker.disabled)
