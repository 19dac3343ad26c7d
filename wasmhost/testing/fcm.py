"""A fake FCM HTTP v1 on 127.0.0.1 over TLS: an OAuth2 token endpoint and the messages:send endpoint.

The token endpoint (hypercorn, HTTP/1.1 and HTTP/2, so google-auth's `requests` can use it too)
verifies the RS256 assertion against the test service account's public key, its audience and scope,
and issues short opaque access tokens. The send endpoint (raw HTTP/2, see `H2Server`) accepts only
live tokens, checks the message the way FCM does (one target, string data values, reserved keys, TTL
shape, payload size) and answers scripted tokens with scripted failures in the real
``google.rpc.Status`` shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypercorn.asyncio import serve
from hypercorn.config import Config

from .apns import DROP, H2Server, Reply, Request

__all__ = ["FakeFCM", "make_service_account"]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
#: Scopes that grant FCM sends (firebase-admin asks for cloud-platform, which Google accepts too).
GRANTING_SCOPES = {SCOPE, "https://www.googleapis.com/auth/cloud-platform"}


def make_service_account(token_uri: str, project_id: str = "demo-project") -> tuple[dict[str, Any], rsa.RSAPublicKey]:
    """A throwaway service-account JSON (the shape Google issues) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": f"push@{project_id}.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": token_uri,
    }
    return account, key.public_key()


def _status(http: int, status: str, message: str, error_code: str = "", **extra: Any) -> bytes:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    details.extend(extra.get("details", []))
    return json.dumps({"error": {"code": http, "message": message, "status": status, "details": details}}).encode()


@dataclass
class Issued:
    token: str
    expires_at: float
    account: str


class FakeFCM:
    """Script actions per registration token (consumed in order): ``ok``, ``unregistered`` (404),
    ``sender-mismatch`` (403), ``invalid-token`` (400 INVALID_ARGUMENT about the token), ``bad-request``
    (400 INVALID_ARGUMENT), ``quota`` (429 QUOTA_EXCEEDED, Retry-After 1), ``unavailable`` (503,
    Retry-After 1), ``internal`` (500), ``unauthenticated`` (401: the access token is revoked),
    ``permission-denied`` (403), ``drop`` (connection closed mid-request)."""

    def __init__(self, ssl_context: ssl.SSLContext, cert_pem_path: str, *, expires_in: int = 3600) -> None:
        self.send_server = H2Server(ssl_context, self._send)
        self.cert_pem_path = cert_pem_path
        self.expires_in = expires_in
        self.accounts: dict[str, tuple[str, rsa.RSAPublicKey]] = {}  # client_email -> (project, key)
        self.issued: dict[str, Issued] = {}
        self.token_requests = 0
        self.refuse_tokens = False
        self.script: dict[str, list[str]] = {}
        self.seen: list[dict[str, Any]] = []
        self.bearers: set[str] = set()
        self.errors: list[str] = []
        self._shutdown = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return self.send_server.url

    @property
    def token_uri(self) -> str:
        assert self._sock is not None
        return f"https://127.0.0.1:{self._sock.getsockname()[1]}/token"

    @property
    def connections(self) -> int:
        return self.send_server.connections

    def add_account(self, account: dict[str, Any], public_key: rsa.RSAPublicKey) -> None:
        self.accounts[account["client_email"]] = (account["project_id"], public_key)

    async def start(self) -> FakeFCM:
        await self.send_server.start()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.setblocking(False)
        config = Config()
        config.bind = [f"fd://{self._sock.fileno()}"]
        config.certfile = config.keyfile = self.cert_pem_path
        config.loglevel = "WARNING"
        config.accesslog = None
        app: Any = self._token_app  # a plain ASGI callable; hypercorn's type wants its own scope classes
        self._task = asyncio.ensure_future(serve(app, config, shutdown_trigger=self._shutdown.wait))
        await asyncio.sleep(0.05)  # let hypercorn start accepting on the bound socket
        return self

    async def aclose(self) -> None:
        self._shutdown.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self._sock is not None:
            with contextlib.suppress(OSError):  # hypercorn may have closed the fd already
                self._sock.close()
        await self.send_server.aclose()

    # -- token endpoint (ASGI) --------------------------------------------------------------------

    async def _token_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = self._token(scope, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    def _token(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        self.token_requests += 1
        if scope["method"] != "POST" or scope["path"] != "/token":
            return 404, {"error": "not_found"}
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        if self.refuse_tokens:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        assertion = form.get("assertion", "")
        try:
            email = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            _project, public = self.accounts[email]
            # google-auth always uses Google's canonical token URI as the audience; Google accepts both.
            claims = jwt.decode(assertion, public, algorithms=["RS256"], audience=[self.token_uri, GOOGLE_TOKEN_URI],
                                options={"require": ["iat", "exp", "iss", "aud"]})
        except (KeyError, jwt.PyJWTError):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if not GRANTING_SCOPES & set(str(claims.get("scope", "")).split()) or claims["exp"] - claims["iat"] > 3600:
            return 400, {"error": "invalid_scope"}
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.issued[token] = Issued(token, time.monotonic() + self.expires_in, email)
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    # -- send endpoint ------------------------------------------------------------------------------

    def _error(self, http: int, status: str, message: str, code: str = "", **extra: Any) -> Reply:
        self.errors.append(code or status)
        return Reply(http, {"content-type": "application/json"}, _status(http, status, message, code, **extra))

    def _check(self, req: Request) -> tuple[Reply | None, dict[str, Any]]:
        auth = req.headers.get("authorization", "")
        issued = self.issued.get(auth[7:]) if auth.startswith("Bearer ") else None
        if issued is None or time.monotonic() >= issued.expires_at:
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), {}
        project = self.accounts[issued.account][0]
        if req.method != "POST" or req.path != f"/v1/projects/{project}/messages:send":
            return self._error(404, "NOT_FOUND", "Requested entity was not found."), {}
        self.bearers.add(issued.token)
        try:
            message = json.loads(req.body)["message"]
            assert isinstance(message, dict)
        except (ValueError, KeyError, AssertionError):
            return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), {}
        if sum(1 for k in ("token", "topic", "condition") if k in message) != 1:
            return self._error(400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition is required."), {}
        data = message.get("data", {})
        for i, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return self._error(400, "INVALID_ARGUMENT", f"Invalid value at 'message.data[{i}].value'",
                                   details=[{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [
                                       {"field": f"message.data[{i}].value", "description": "Invalid value"}]}]), {}
            if key in ("from", "gcm", "message_type") or key.startswith("google."):
                return self._error(400, "INVALID_ARGUMENT", f"Invalid data key: {key}"), {}
        android = message.get("android", {})
        if android.get("priority", "NORMAL") not in ("NORMAL", "HIGH"):
            return self._error(400, "INVALID_ARGUMENT", "Invalid android priority"), {}
        ttl = android.get("ttl")
        if ttl is not None and not (isinstance(ttl, str) and ttl.endswith("s") and ttl[:-1].isdigit()):
            return self._error(400, "INVALID_ARGUMENT", "Invalid android ttl"), {}
        for value in message.get("apns", {}).get("headers", {}).values():
            if not isinstance(value, str):
                return self._error(400, "INVALID_ARGUMENT", "Invalid apns header"), {}
        size = len(json.dumps({"notification": message.get("notification", {}), "data": data},
                              separators=(",", ":")).encode())
        if size > 4096:
            return self._error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT"), {}
        return None, message

    async def _send(self, conn: Any, req: Request) -> Reply:
        refused, message = self._check(req)
        if refused is not None:
            return refused
        self.seen.append(message)
        token = message.get("token", "")
        steps = self.script.get(token)
        action = steps.pop(0) if steps else "ok"
        if action == "unregistered":
            return self._error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if action == "sender-mismatch":
            return self._error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        if action == "invalid-token":
            return self._error(400, "INVALID_ARGUMENT",
                               "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT")
        if action == "bad-request":
            return self._error(400, "INVALID_ARGUMENT", "Invalid notification payload", "INVALID_ARGUMENT")
        if action == "quota":
            reply = self._error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED")
            reply.headers["retry-after"] = "1"
            return reply
        if action == "unavailable":
            reply = self._error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")
            reply.headers["retry-after"] = "1"
            return reply
        if action == "internal":
            return self._error(500, "INTERNAL", "Internal error encountered.", "INTERNAL")
        if action == "unauthenticated":
            self.issued.pop(req.headers["authorization"][7:], None)
            return self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if action == "permission-denied":
            return self._error(403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied")
        if action == "drop":
            return DROP
        project = req.path.split("/")[3]
        return Reply(200, {"content-type": "application/json"},
                     json.dumps({"name": f"projects/{project}/messages/0:{secrets.token_hex(8)}"}).encode())
