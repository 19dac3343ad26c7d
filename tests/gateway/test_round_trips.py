"""What a warm request costs PostgreSQL: the round trips of an invoke and of a send, counted by the driver.

Warm means the API key, the function, the compiled module, the namespace's dispatcher and the user's
device list were all read once already and nothing changed since; what remains is what must be written.
Activity and the delivery worker's poll for due deliveries run in the background once a second whatever
the rate, so they are stopped here (activity is counted on its own), and so is the once-a-second recount
of the namespace's queued deliveries, and the fleet caps' tick (giving back invocation slots unused for a
tick, renewing leases every 10 s).

The fleet's per-namespace caps are on (the store is PostgreSQL): the warm request took this process's
grant of send tokens and its lease of an invocation slot, so the counted requests spend them locally.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.store.pg import drop_schema, run_sync, schema_url
from wasmhost.gateway import fleetcaps
from wasmhost.gateway.state import Gateway
from wasmhost.push import delivery
from wasmhost.push.delivery import QueueSettings
from wasmhost.store.postgres import PgDriver

from .guests import WELCOME_WASM
from .harness import GatewayServer, Tenant, create_tenant

REQUESTS = 5
#: The durable accept: the send, its delivery rows and — the outbox delivering in the store itself — the
#: outbox's record, one statement with the deliveries already in their final state. Nothing read.
WRITES_PER_SEND = 1
#: Longer than push.delivery.FLUSH_DELAY: recorded delivery states have been committed.
SETTLE = 0.2


@pytest.fixture(scope="module")
def pg_gateway(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    tmp = tmp_path_factory.mktemp("round-trips")
    url, schema = run_sync(schema_url(pg_database))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WASMHOST_STATE_DIR", str(tmp / "state"))
        mp.setattr(delivery, "QUEUED_RECOUNT", 3600.0)  # the cap's recount, once a second, is not per request
        mp.setattr(fleetcaps, "SLOT_TICK", 3600.0)  # background, bounded by time whatever the rate
        gw = GatewayServer(tmp, db_url=url, queue=QueueSettings(poll_interval=3600.0)).start()
        try:
            yield gw
        finally:
            gw.stop()
            run_sync(drop_schema(pg_database, schema))


def _gateway(gw: GatewayServer) -> Gateway:
    state: Gateway = gw.app.state.gateway
    return state


def _driver(gw: GatewayServer) -> PgDriver:
    services = _gateway(gw).services
    assert services is not None
    driver = services.store.driver  # type: ignore[attr-defined]
    assert isinstance(driver, PgDriver)
    return driver


@pytest.fixture(scope="module")
def tenant(pg_gateway: GatewayServer) -> Iterator[Tenant]:
    tenant = create_tenant(pg_gateway, "rt")
    with tenant.user("alice") as alice:
        r = alice.post("/v1/push/devices", json={"device_id": "phone", "provider": "outbox", "token": "tok-phone"})
        assert r.status_code == 200, r.text
    r = tenant.admin.put("/v1/functions/welcome", content=WELCOME_WASM.read_bytes(),
                         headers={"content-type": "application/wasm"})
    assert r.status_code == 200, r.text
    pg_gateway.run(_gateway(pg_gateway).activity.aclose())  # no background flush while counting
    yield tenant
    tenant.close()


def _round_trips_each(gw: GatewayServer, request: object) -> float:
    assert callable(request)
    request()  # warm
    driver = _driver(gw)
    sends, slots = _gateway(gw).send_limiter.fleet, _gateway(gw).slots.fleet
    assert sends is not None and slots is not None, "on PostgreSQL the caps are the fleet's"
    time.sleep(SETTLE)  # the warm request's delivery states are committed (group commit, push.delivery)
    before, grants, leases = driver.round_trips, sends.grants, slots.requests
    for _ in range(REQUESTS):
        request()
    time.sleep(SETTLE)
    assert (sends.grants, slots.requests) == (grants, leases)  # spent locally: no grant, no lease
    return (driver.round_trips - before) / REQUESTS


def test_a_warm_invoke_only_writes(pg_gateway: GatewayServer, tenant: Tenant) -> None:
    def invoke() -> None:
        r = tenant.admin.post("/v1/functions/welcome/invoke", content=json.dumps({"user": "alice", "name": "A"}))
        assert r.status_code == 200 and r.json()["output"] == "welcomed alice: 1/1 devices", r.text

    assert _round_trips_each(pg_gateway, invoke) <= WRITES_PER_SEND


def test_a_warm_send_only_writes(pg_gateway: GatewayServer, tenant: Tenant) -> None:
    def send() -> None:
        r = tenant.admin.post("/v1/push/send", json={"user_id": "alice", "title": "t", "body": "b"})
        assert r.status_code == 200 and r.json()["devices_succeeded"] == 1, r.text

    assert _round_trips_each(pg_gateway, send) <= WRITES_PER_SEND


def test_an_activity_flush_costs_the_same_for_one_invocation_or_many(pg_gateway: GatewayServer,
                                                                     tenant: Tenant) -> None:
    gateway = _gateway(pg_gateway)
    driver = _driver(pg_gateway)

    def flush_after(invocations: int) -> int:
        for _ in range(invocations):
            r = tenant.admin.post("/v1/functions/welcome/invoke", content=json.dumps({"user": "alice", "name": "A"}))
            assert r.status_code == 200, r.text
        time.sleep(SETTLE)  # the sends' delivery states are committed: count the activity flush alone
        before = driver.round_trips
        pg_gateway.run(gateway.activity.flush())
        return driver.round_trips - before

    one = flush_after(1)
    assert one > 0
    assert flush_after(REQUESTS) == one  # batched statements, not one per invocation
