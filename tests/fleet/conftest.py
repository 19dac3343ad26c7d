"""Two real gateways on one real PostgreSQL (a fresh schema per test module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.gateways import GatewayProcess
from tests.store.pg import drop_schema, pg_database, run_sync, schema_url  # noqa: F401 (pg_database is a fixture)

#: Gateway B's dispatcher TTL: long, so only a notification can explain B seeing a change within a second.
B_TTL = 30.0


@pytest.fixture(scope="module")
def fleet_db(request: pytest.FixtureRequest) -> Iterator[str]:
    database = request.getfixturevalue("pg_database")
    url, schema = run_sync(schema_url(database))
    try:
        yield url
    finally:
        run_sync(drop_schema(database, schema))


@pytest.fixture(scope="module")
def fleet(fleet_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    tmp: Path = tmp_path_factory.mktemp("fleet")
    a = GatewayProcess("a", fleet_db, tmp)
    b = GatewayProcess("b", fleet_db, tmp, WASMHOST_DISPATCHER_TTL=str(B_TTL))
    started: list[GatewayProcess] = []
    try:
        for gw in (a, b):
            started.append(gw.start())
        yield a, b
    finally:
        for gw in started:
            gw.stop()
