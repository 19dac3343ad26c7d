"""Prometheus metrics, in a registry owned by one app (tests run several apps in one process).

No metric carries a namespace label: /metrics is for the operator, and per-tenant labels would both
leak tenant names and grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..push.observer import PushObserver
from ..runtime import InvocationResult
from ..services import Services

__all__ = ["CONTENT_TYPE_LATEST", "ChangeFeedCollector", "Metrics"]

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


class Metrics:
    def __init__(self) -> None:
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
        return generate_latest(self.registry)


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
