"""Save-time SSRF checks of FCM's tenant URLs go through DNS and fail closed."""

from __future__ import annotations

import pytest

from wasmhost.providers.fcm import FcmSpec
from wasmhost.push import CredentialsError
from wasmhost.push.credentials import validate_credentials
from wasmhost.testing.fcm import make_service_account


def _doc(token_uri: str, endpoint: str | None = None) -> dict:
    account, _ = make_service_account(token_uri)
    doc: dict = {"service_account": account}
    if endpoint:
        doc["endpoint"] = endpoint
    return doc


@pytest.mark.parametrize(
    ("token_uri", "endpoint", "field"),
    [
        ("https://localhost/token", None, "token_uri"),
        ("https://oauth2.googleapis.com/token", "https://localhost", "endpoint"),
    ],
)
async def test_names_that_resolve_to_private_addresses_are_refused(token_uri: str, endpoint: str | None,
                                                                    field: str) -> None:
    with pytest.raises(CredentialsError, match=field):
        await validate_credentials(FcmSpec(), _doc(token_uri, endpoint))


async def test_private_endpoints_allowed_when_the_operator_says_so() -> None:
    doc = await validate_credentials(FcmSpec(allow_private_endpoints=True), _doc("https://localhost/token"))
    assert doc["service_account"]["token_uri"] == "https://localhost/token"
