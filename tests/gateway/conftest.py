"""Fixtures: one real gateway per test module (unique namespaces keep tests apart)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from tests.store.pg import pg_database  # noqa: F401 (a fixture: a fresh PostgreSQL database per session)

from .harness import GatewayServer, Tenant, create_tenant

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    gw = GatewayServer(tmp_path_factory.mktemp("gateway"), allow_private_endpoints=True).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def make_tenant(server: GatewayServer) -> Iterator[Callable[..., Tenant]]:
    made: list[Tenant] = []

    def make(prefix: str = "t", **kwargs: object) -> Tenant:
        tenant = create_tenant(server, f"{prefix}-{next(_names)}", **kwargs)  # type: ignore[arg-type]
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        tenant.close()
