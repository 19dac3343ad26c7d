"""Loopback fakes of the push services, for tests and benchmarks (as `starlette.testclient` ships
with Starlette): real servers on 127.0.0.1 that check requests the way the services do and answer
scripted failures.

One module per service, imported on its own so each needs only its own dependencies:

* `wasmhost.testing.apns`: `FakeAPNs` (TLS + raw HTTP/2; `make_ca` mints a test CA with trustme) and
  `H2Server`, the HTTP/2 server under it and under FCM's send endpoint;
* `wasmhost.testing.fcm`: `FakeFCM`, the OAuth2 token endpoint (hypercorn) and messages:send;
* `wasmhost.testing.expo`, `wasmhost.testing.ntfy`, `wasmhost.testing.webpush`: `FakeExpo`,
  `FakeNtfy`, `FakeWebPush` (with `Browser`, a subscribed browser that decrypts what it receives).

The APNs and FCM fakes need the ``testing`` extra (trustme, hypercorn). This package itself exports
`MockClient`, the in-memory `wasmhost.providers.HTTPClient` for unit tests, and the HTTP/1.1 server
the loopback fakes share.
"""

from ._mock import MockClient, MockRequest
from ._server import DROP, FakeServer, Request, Response, ServedFake

__all__ = ["DROP", "FakeServer", "MockClient", "MockRequest", "Request", "Response", "ServedFake"]
