"""Operations: /healthz reflects the store, /metrics counts what happened without naming tenants."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .guests import ECHO, TRAP, WELCOME_WASM
from .harness import ADMIN_TOKEN, GatewayServer, Tenant, create_tenant


def test_metrics_count_invocations_sends_and_the_dispatcher_cache(
    server: GatewayServer, make_tenant: Callable[..., Tenant]
) -> None:
    tenant = make_tenant("metered")
    with tenant.user("erin") as erin:
        erin.post("/v1/push/devices", json={"device_id": "p", "provider": "outbox", "token": "erin-token-1"})
    tenant.admin.put("/v1/functions/welcome", content=WELCOME_WASM.read_bytes())
    tenant.admin.put("/v1/functions/trap", content=TRAP.encode())
    tenant.admin.put("/v1/functions/echo", content=ECHO.encode())
    assert tenant.admin.post("/v1/functions/welcome/invoke", content=b'{"user": "erin"}').json()["ok"]
    tenant.admin.post("/v1/functions/trap/invoke")
    tenant.admin.post("/v1/push/send", json={"user_id": "erin", "title": "direct"})

    with server.client(ADMIN_TOKEN) as operator:
        r = operator.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(r.text) for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("wasmhost_invocations_total", outcome="ok") >= 1
    assert value("wasmhost_invocations_total", outcome="trap") >= 1
    assert value("wasmhost_traps_total", kind="trap") >= 1
    assert value("wasmhost_invocation_duration_seconds_count") >= 2
    assert value("wasmhost_sends_total", outcome="ok") >= 2  # the guest's and the HTTP one
    assert value("wasmhost_push_deliveries_total", provider="outbox", outcome="success") >= 2
    assert value("wasmhost_push_dispatcher_cache_total", event="build") >= 1
    assert value("wasmhost_push_dispatcher_cache_total", event="hit") >= 1
    assert ("wasmhost_invocations_in_flight", ()) in samples
    assert tenant.name not in r.text and "erin" not in r.text


def test_healthz_reports_an_unreachable_store(tmp_path: Path) -> None:
    gw = GatewayServer(tmp_path).start()
    try:
        with gw.client() as c:
            assert c.get("/healthz").json() == {"status": "ok"}
            tenant = create_tenant(gw, "health")
            services = gw.app.state.gateway.services
            gw.run(services.store.aclose())
            r = c.get("/healthz")
            assert r.status_code == 503 and r.json() == {"error": "the store is unreachable"}
            # Other routes answer a clean 503 too, never a traceback.
            r = tenant.admin.get("/v1/functions")
            assert r.status_code == 503 and r.json() == {"error": "the store is unavailable; try again later"}
        tenant.close()
    finally:
        gw.stop()


def test_worker_snapshots_sum_counts_but_not_readings_of_the_shared_queue(tmp_path: Path) -> None:
    from wasmhost.gateway.metrics import _merge

    for worker, (sent, depth) in enumerate([(3, 40), (4, 42)]):
        (tmp_path / f"worker-{worker}.prom").write_text(
            "# HELP wasmhost_sends Sends\n# TYPE wasmhost_sends counter\n"
            f"wasmhost_sends_total{{outcome=\"ok\"}} {sent}\n"
            "# HELP wasmhost_delivery_queue_depth Depth\n# TYPE wasmhost_delivery_queue_depth gauge\n"
            f"wasmhost_delivery_queue_depth {depth}\n"
        )
    merged = {sample.name: sample.value for family in text_string_to_metric_families(_merge(tmp_path).decode())
              for sample in family.samples}
    assert merged["wasmhost_sends_total"] == 7  # what each worker did, added up
    assert merged["wasmhost_delivery_queue_depth"] == 42  # one queue, read by both: not 82
