"""Save-time rules for tenant URLs that carry secrets: DNS-checked, and https where a secret travels."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers.apns import apns_specs
from wasmhost.providers.expo import ExpoSpec
from wasmhost.providers.ntfy import NtfySpec
from wasmhost.push import CredentialsError
from wasmhost.push.credentials import validate_credentials


def _apns_doc(endpoint: str) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"team_id": "ABCDE12345", "key_id": "KEY1234567", "bundle_id": "com.example.app", "p8_key": key,
            "environment": "sandbox", "endpoint": endpoint}


async def test_apns_endpoint_that_resolves_to_loopback_is_refused_at_save() -> None:
    spec = apns_specs()[0]
    with pytest.raises(CredentialsError, match="endpoint rejected"):
        await validate_credentials(spec, _apns_doc("https://localhost:8443"))
    allowed = apns_specs(allow_private_endpoints=True)[0]
    assert (await validate_credentials(allowed, _apns_doc("https://localhost:8443")))["endpoint"]


def _expo(allow_private_endpoints: bool) -> ExpoSpec:
    return ExpoSpec(None, allow_private_endpoints=allow_private_endpoints)  # type: ignore[arg-type]


async def test_expo_endpoint_must_be_https_for_tenants() -> None:
    with pytest.raises(CredentialsError, match="https"):
        _expo(False).validate({"access_token": "tok", "endpoint": "http://push.example.com"})
    assert _expo(False).validate({"endpoint": "https://push.example.com"})["endpoint"] == "https://push.example.com"
    assert _expo(True).validate({"endpoint": "http://127.0.0.1:9000"})["endpoint"] == "http://127.0.0.1:9000"


def test_ntfy_plain_http_only_without_secrets() -> None:
    spec = NtfySpec()
    assert spec.validate({"base_url": "http://ntfy.example.com"})["base_url"] == "http://ntfy.example.com"
    for secret in ({"auth_token": "tk_abcdef"}, {"username": "u", "password": "p"}):
        with pytest.raises(CredentialsError, match="https"):
            spec.validate({"base_url": "http://ntfy.example.com", **secret})
        assert spec.validate({"base_url": "https://ntfy.example.com", **secret})
    assert NtfySpec(allow_private_endpoints=True).validate({"base_url": "http://127.0.0.1:1",
                                                            "auth_token": "tk_abcdef"})


def test_ntfy_secret_never_combined_with_a_plain_http_tenant_url_from_another_save() -> None:
    from wasmhost.push import ResolvedConfig

    config = ResolvedConfig("acme", ntfy_base_url="http://ntfy.example.com", ntfy_base_url_tenant=True,
                            credentials={"ntfy": {"auth_token": "tk_secret"}})
    effective = NtfySpec().document_for(config)
    assert effective is not None and effective["base_url"] == "http://ntfy.example.com"
    assert "auth_token" not in effective
    https = ResolvedConfig("acme", ntfy_base_url="https://ntfy.example.com", ntfy_base_url_tenant=True,
                           credentials={"ntfy": {"auth_token": "tk_secret"}})
    assert NtfySpec().document_for(https)["auth_token"] == "tk_secret"  # type: ignore[index]
    assert NtfySpec(allow_private_endpoints=True).document_for(config)["auth_token"] == "tk_secret"  # type: ignore[index]
