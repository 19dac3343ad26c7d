"""The provider contract, for every network provider, against both backends of the one client interface:
the in-memory `MockClient` (canned answers in each service's shape) and the loopback fakes (real
sockets, TLS and HTTP/2 where the service uses them).

Whatever the wire protocol, a provider turns the service's answer into the same outcome: delivered,
a dead token (pruned), throttled (transient, honouring Retry-After), refused credentials; and a
certificate that does not verify is a credentials problem, never retried.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers import HTTPClient, HTTPResponse
from wasmhost.providers._client import TLSVerifyFailed
from wasmhost.providers.apns import ApnsSpec
from wasmhost.providers.expo import ExpoSpec
from wasmhost.providers.fcm import FcmSpec
from wasmhost.providers.ntfy import NtfySpec
from wasmhost.providers.webpush import WebPushSpec
from wasmhost.push import Delivery, FailureKind, Outcome, PushMessage, ResolvedConfig
from wasmhost.testing import MockClient, MockRequest
from wasmhost.testing.apns import FakeAPNs, make_ca
from wasmhost.testing.expo import FakeExpo
from wasmhost.testing.fcm import FakeFCM, make_service_account
from wasmhost.testing.ntfy import FakeNtfy
from wasmhost.testing.webpush import Browser, FakeWebPush

SCENARIOS = ("ok", "dead", "throttled", "credentials", "untrusted")
PROVIDERS = ("apns", "fcm", "ntfy", "expo", "webpush")
TEAM, KEY_ID = "TEAM123456", "KEY1234567"
APNS_TOKEN = "ab" * 32
FCM_TOKEN = "fcm-registration-token-contract"
EXPO_TOKEN = "ExponentPushToken[contract1]"
NTFY_TOPIC = "contractTopic"


def _pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _json(status: int, doc: Any, **headers: str) -> HTTPResponse:
    return HTTPResponse(status, {"content-type": "application/json", **headers}, json.dumps(doc).encode())


def _fcm_error(status: int, code: str, detail: str) -> dict[str, Any]:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": detail}]
    return {"error": {"code": status, "message": "refused", "status": code, "details": details}}


#: What each service answers in each scenario, in its own shape (the loopback fakes answer the same).
CANNED: dict[str, dict[str, HTTPResponse]] = {
    "apns": {
        "ok": HTTPResponse(200, {"apns-id": "1"}, b""),
        "dead": _json(410, {"reason": "Unregistered", "timestamp": 1}),
        "throttled": _json(429, {"reason": "TooManyRequests"}, **{"retry-after": "1"}),
        "credentials": _json(403, {"reason": "InvalidProviderToken"}),
    },
    "fcm": {
        "ok": _json(200, {"name": "projects/demo-project/messages/1"}),
        "dead": _json(404, _fcm_error(404, "NOT_FOUND", "UNREGISTERED")),
        "throttled": _json(429, _fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"), **{"retry-after": "1"}),
        "credentials": _json(403, _fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH_NOT")),
    },
    "ntfy": {
        "ok": _json(200, {"id": "m1", "event": "message"}),
        "throttled": _json(429, {"code": 42901, "http": 429, "error": "limit"}, **{"retry-after": "1"}),
        "credentials": _json(401, {"code": 40101, "http": 401, "error": "unauthorized"}),
    },
    "expo": {
        "ok": _json(200, {"data": [{"status": "ok", "id": "r1"}]}),
        "dead": _json(200, {"data": [{"status": "error", "message": "gone",
                                      "details": {"error": "DeviceNotRegistered"}}]}),
        "throttled": _json(429, {"errors": [{"code": "TOO_MANY_REQUESTS", "message": "slow down"}]},
                           **{"retry-after": "1"}),
        "credentials": _json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad token"}]}),
    },
    "webpush": {
        "ok": HTTPResponse(201, {}, b""),
        "dead": HTTPResponse(410, {}, b""),
        "throttled": HTTPResponse(429, {"retry-after": "1"}, b""),
        "credentials": HTTPResponse(401, {}, b""),
    },
}
#: How each loopback fake is told to answer a scenario.
SCRIPTS: dict[str, dict[str, str]] = {
    "apns": {"dead": "dead", "throttled": "rate-limit", "credentials": "invalid-auth"},
    "fcm": {"dead": "unregistered", "throttled": "quota", "credentials": "permission-denied"},
    "ntfy": {"throttled": "429", "credentials": "401"},
    "expo": {"dead": "dead", "throttled": "429", "credentials": "401"},
    "webpush": {"dead": "410", "throttled": "429", "credentials": "401"},
}


def _expect(provider: str, scenario: str, outcome: Outcome) -> None:
    if scenario == "ok":
        assert outcome.success, outcome
        return
    assert not outcome.success
    if scenario == "dead":
        assert outcome.kind is FailureKind.DEAD_TARGET, outcome
    elif scenario == "throttled":
        assert outcome.kind is FailureKind.TRANSIENT and outcome.retry_after == 1.0, outcome
    elif scenario == "credentials":
        assert outcome.kind is FailureKind.CREDENTIALS, outcome
    else:
        assert (outcome.kind, outcome.reason) == (FailureKind.CREDENTIALS, "TLSVerifyFailed"), outcome


@dataclass
class Setup:
    """One provider, built by its spec as the pool would, plus what to send and how to script the fake."""

    provider: Any
    token: str
    script: Callable[[str], None]


def _message() -> PushMessage:
    return PushMessage(title="Hello", body="contract")


def _delivery(provider: str, token: str) -> Delivery:
    return Delivery("acme", "alice", f"{provider}-device", "row-1", token, _message())


class Loopback:
    def __init__(self, tmp: Path) -> None:
        ca, self.server_ctx, self.ca_pem = make_ca()
        self.cert_path = tmp / "server.pem"
        self.cert_path.write_bytes(ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.bytes())
        self.p8 = ec.generate_private_key(ec.SECP256R1())
        self.vapid = ec.generate_private_key(ec.SECP256R1())
        self.apns = FakeAPNs(self.server_ctx)
        self.fcm = FakeFCM(self.server_ctx, str(self.cert_path))
        self.ntfy = FakeNtfy(token="tk_contract")
        self.expo = FakeExpo()
        self.webpush = FakeWebPush()
        self.account: dict[str, Any] = {}

    async def start(self) -> Loopback:
        for fake in (self.apns, self.fcm, self.ntfy, self.expo, self.webpush):
            await fake.start()  # type: ignore[attr-defined]
        self.apns.add_key(TEAM, KEY_ID, self.p8.public_key())
        self.account, public = make_service_account(self.fcm.token_uri)
        self.fcm.add_account(self.account, public)
        return self

    async def aclose(self) -> None:
        for fake in (self.apns, self.fcm, self.ntfy, self.expo, self.webpush):
            await fake.aclose()  # type: ignore[attr-defined]

    def documents(self, *, trusted: bool = True) -> dict[str, dict[str, Any]]:
        ca = {"ca_bundle": self.ca_pem} if trusted else {}
        return {
            "apns": {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": "com.example.app", "p8_key": _pem(self.p8),
                     "environment": "sandbox", "endpoint": self.apns.url, **ca},
            "fcm": {"service_account": self.account, "endpoint": self.fcm.url, **ca},
            "ntfy": {"base_url": self.ntfy.url, "auth_token": "tk_contract"},
            "expo": {"endpoint": self.expo.url},
            "webpush": {"vapid_private_key": _pem(self.vapid), "vapid_subject": "mailto:ops@example.com"},
        }


SPECS: dict[str, Callable[[], Any]] = {
    "apns": lambda: ApnsSpec(allow_private_endpoints=True),
    "fcm": lambda: FcmSpec(allow_private_endpoints=True),
    "ntfy": lambda: NtfySpec(allow_private_endpoints=True),
    "expo": lambda: ExpoSpec(None, allow_private_endpoints=True, receipt_delay=3600),  # type: ignore[arg-type]
    "webpush": lambda: WebPushSpec(allow_private_endpoints=True),
}


def _build(name: str, document: dict[str, Any]) -> Any:
    spec = SPECS[name]()
    doc = spec.validate(document)
    config = ResolvedConfig(namespace="acme", credentials={name: doc})
    return spec.build(config, spec.document_for(config) or doc)


async def _use(provider: Any, client: HTTPClient) -> None:
    """Put `client` under an already built provider (its own client never connected)."""
    if hasattr(provider, "client_factory"):
        provider.client_factory = lambda origin: client
    else:
        await provider.client.aclose()
        provider.client = client


@pytest.fixture(scope="module")
def browser() -> Browser:
    return Browser("contractSub")


@pytest.fixture
async def loopback(tmp_path: Path) -> AsyncIterator[Loopback]:
    fakes = await Loopback(tmp_path).start()
    try:
        yield fakes
    finally:
        await fakes.aclose()


async def _loopback_setup(name: str, fakes: Loopback, *, trusted: bool = True) -> Setup:
    provider = _build(name, fakes.documents(trusted=trusted)[name])
    if name == "webpush":
        sub = fakes.webpush.browser("contractSub")
        token = sub.token(fakes.webpush.url)
    else:
        token = {"apns": APNS_TOKEN, "fcm": FCM_TOKEN, "ntfy": NTFY_TOPIC, "expo": EXPO_TOKEN}[name]

    def script(action: str) -> None:
        if name == "expo" and action in ("429", "401"):
            fakes.expo.request_script.append(action)
            return
        fake: Any = getattr(fakes, name)
        key = "contractSub" if name == "webpush" else token
        fake.script.setdefault(key, []).append(action)

    return Setup(provider, token, script)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", PROVIDERS)
async def test_contract_over_the_loopback_fakes(name: str, scenario: str, loopback: Loopback) -> None:
    if scenario in ("dead", "throttled", "credentials") and scenario not in SCRIPTS[name]:
        pytest.skip(f"{name} has no {scenario} answer")
    if scenario == "untrusted" and name in ("ntfy", "expo", "webpush"):
        pytest.skip(f"the {name} fake serves plain HTTP here; TLS trust is covered by its own tests")
    setup = await _loopback_setup(name, loopback, trusted=scenario != "untrusted")
    try:
        if scenario in SCRIPTS[name]:
            setup.script(SCRIPTS[name][scenario])
        [outcome] = await setup.provider.send([_delivery(name, setup.token)])
        _expect(name, scenario, outcome)
    finally:
        await setup.provider.aclose()


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", PROVIDERS)
async def test_contract_over_the_in_memory_client(name: str, scenario: str, browser: Browser) -> None:
    if scenario in ("dead", "throttled", "credentials") and scenario not in CANNED[name]:
        pytest.skip(f"{name} has no {scenario} answer")
    p8, vapid = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    account, _ = make_service_account("https://oauth2.example.com/token")
    documents = {
        "apns": {"team_id": TEAM, "key_id": KEY_ID, "bundle_id": "com.example.app", "p8_key": _pem(p8),
                 "environment": "sandbox"},
        "fcm": {"service_account": account},
        "ntfy": {"base_url": "https://ntfy.example.com", "auth_token": "tk_contract"},
        "expo": {},
        "webpush": {"vapid_private_key": _pem(vapid), "vapid_subject": "mailto:ops@example.com"},
    }
    token = {"apns": APNS_TOKEN, "fcm": FCM_TOKEN, "ntfy": NTFY_TOPIC, "expo": EXPO_TOKEN,
             "webpush": browser.token("https://push.example.com")}[name]

    def answer(request: MockRequest) -> HTTPResponse:
        if request.url == account["token_uri"]:
            return _json(200, {"access_token": "ya29.contract", "expires_in": 3600})
        assert token in request.url or token.encode() in request.body or name == "webpush"
        if scenario == "untrusted":
            raise TLSVerifyFailed("the push service's certificate did not verify")
        return CANNED[name][scenario]

    provider = _build(name, documents[name])
    client = MockClient(answer)
    await _use(provider, client)
    try:
        [outcome] = await provider.send([_delivery(name, token)])
        _expect(name, scenario, outcome)
        assert client.requests and all(r.method == "POST" for r in client.requests)
    finally:
        await provider.aclose()
