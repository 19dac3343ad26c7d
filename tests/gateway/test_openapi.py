"""The served OpenAPI document, checked against the running gateway by schemathesis: generated valid
and invalid requests for every operation, with the right credentials per route, find no 5xx and no
answer that breaks the document (status, content type, headers, body schema), and invalid input is
always refused with a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

from wasmhost.push import Defaults  # noqa: E402

from .guests import ECHO  # noqa: E402
from .harness import ADMIN_TOKEN, GatewayServer, Tenant, create_tenant, hs256_token  # noqa: E402

#: Examples per operation and mode: ~20 s here for all 57 runs (100 also passes); keep it bounded for CI.
MAX_EXAMPLES = 50

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayServer, Tenant, Tenant]]:
    # The outbox is an operator default, so a generated DELETE of the tenant's credentials cannot turn
    # push off (sends would then be a documented 503, which the no-5xx check counts as a failure).
    server = GatewayServer(tmp_path_factory.mktemp("openapi"), allow_private_endpoints=True,
                           defaults=Defaults(credentials={"outbox": {}})).start()
    tenant = create_tenant(server, "st")
    # Generated changes to user-token settings go to a second namespace, so they cannot lock the device
    # routes of the first one out for the rest of the run.
    auth_tenant = create_tenant(server, "st-auth")
    tenant.admin.put("/v1/functions/0", content=ECHO.encode())
    with tenant.user("0") as user:
        user.post("/v1/push/devices", json={"device_id": "0", "provider": "outbox", "token": "t"})
    try:
        yield server, tenant, auth_tenant
    finally:
        tenant.close()
        auth_tenant.close()
        server.stop()


@pytest.fixture(scope="module")
def api_schema(gateway: tuple[GatewayServer, Tenant, Tenant]) -> Any:
    server = gateway[0]
    # 413 (body over the route's cap) is how we refuse an over-long field: a rejection like 400.
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "413", "429"]}}}
    )
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


OPERATIONS = [
    ("POST", "/v1/namespaces"), ("GET", "/v1/namespaces"), ("POST", "/v1/namespaces/{namespace}/keys"),
    ("GET", "/v1/namespaces/{namespace}/keys"), ("DELETE", "/v1/namespaces/{namespace}/keys/{key_id}"),
    ("GET", "/v1/namespace"), ("GET", "/v1/namespace/auth"), ("PUT", "/v1/namespace/auth"),
    ("DELETE", "/v1/namespace/auth"), ("GET", "/v1/namespace/webhook"), ("PUT", "/v1/namespace/webhook"),
    ("DELETE", "/v1/namespace/webhook"), ("GET", "/v1/namespace/push-credentials"),
    ("GET", "/v1/namespace/push-credentials/{provider}"), ("PUT", "/v1/namespace/push-credentials/{provider}"),
    ("DELETE", "/v1/namespace/push-credentials/{provider}"), ("GET", "/v1/push/config"),
    ("PUT", "/v1/push/config"), ("DELETE", "/v1/push/config"), ("POST", "/v1/push/send"),
    ("GET", "/v1/push/outbox"), ("GET", "/v1/push/sends"), ("GET", "/v1/push/sends/{send_id}"),
    ("POST", "/v1/push/devices"), ("GET", "/v1/push/devices"),
    ("DELETE", "/v1/push/devices/{device_id}"), ("PUT", "/v1/functions/{name}"), ("GET", "/v1/functions"),
    ("GET", "/v1/functions/{name}"), ("DELETE", "/v1/functions/{name}"), ("POST", "/v1/functions/{name}/invoke"),
    ("GET", "/v1/functions/{name}/invocations"), ("GET", "/v1/namespace/usage"),
    ("GET", "/v1/namespace/users/{user_id}/devices"), ("DELETE", "/v1/namespace/users/{user_id}/devices/{device_id}"),
    ("GET", "/healthz"), ("GET", "/metrics"),
]


def _auth(path: str, tenant: Tenant, auth_tenant: Tenant) -> dict[str, str]:
    """The credential each audience uses; the namespace header is ours, not generated."""
    if path == "/v1/namespace/auth":
        return {"Authorization": f"Bearer {auth_tenant.key}"}
    if path.startswith("/v1/namespaces"):
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if path.startswith("/v1/push/devices"):
        return {"Authorization": f"Bearer {hs256_token(tenant.jwt_secret, '0')}", "X-Wasmhost-Namespace": tenant.name}
    return {"Authorization": f"Bearer {tenant.key}"}


# schemathesis' own pytest plugin (`from_fixture`) does not run on pytest 9, so each operation is driven
# through its Hypothesis strategy here: the same generation and the same checks.
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_gateway_conforms_to_its_openapi_document(
    api_schema: Any, gateway: tuple[GatewayServer, Tenant, Tenant], method: str, path: str, mode: str
) -> None:
    server, tenant, auth_tenant = gateway
    operation = api_schema[path][method]
    # Credentials are fixed, not generated: a mutated Authorization would only test the 401 path.
    headers = _auth(path, tenant, auth_tenant)
    if mode == "negative" and not _can_be_negated(operation, headers):
        pytest.skip("nothing in this operation can be made invalid")
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode), headers=headers)

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=server.url, checks=CHECKS)

    run()


def _can_be_negated(operation: Any, fixed_headers: dict[str, str]) -> bool:
    definition = operation.definition.raw
    free = [p for p in definition.get("parameters", []) if not (p["in"] == "header" and p["name"] in fixed_headers)]
    return bool(free or definition.get("requestBody"))


def test_every_route_and_error_is_documented(gateway: tuple[GatewayServer, Tenant, Tenant]) -> None:
    server = gateway[0]
    doc = httpx.get(f"{server.url}/openapi.json").json()
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert set(OPERATIONS) == set(ops)  # the run above covered every operation
    for key, op in ops.items():
        if key[1] in ("/healthz", "/metrics"):
            continue
        codes = set(op["responses"])
        assert {"401", "500"} <= codes, key
        assert "422" not in codes, key
        if key[0] in ("PUT", "POST") and "requestBody" in op:
            assert "400" in codes and "413" in codes or key[1].endswith("/keys"), key
    error = doc["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    schemes = doc["components"]["securitySchemes"]
    assert set(schemes) == {"operatorToken", "namespaceApiKey", "userToken"}
    providers = next(p for p in ops[("PUT", "/v1/namespace/push-credentials/{provider}")]["parameters"]
                     if p["name"] == "provider")
    assert "outbox" in providers["schema"]["enum"]
