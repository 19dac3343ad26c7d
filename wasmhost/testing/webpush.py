"""A fake Web Push service: verifies what a real one verifies (VAPID ES256 signature against `k`,
`aud` = its origin, `exp` within 24 h, `sub`, `TTL`, `Content-Encoding: aes128gcm`, the 4096-byte body
limit), decrypts each message with the subscription's private key, and scripts failures per subscription.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from wasmhost.providers._ece import b64url_decode, b64url_encode, decrypt

from ._server import DROP, Request, Response, ServedFake

__all__ = ["Browser", "FakeWebPush"]

_AUTH = re.compile(r"^vapid\s+t=([^,\s]+)\s*,\s*k=([A-Za-z0-9_-]+)\s*$")
BODY_LIMIT = 4096


@dataclass
class Browser:
    """One subscribed browser: its key pair and auth secret, as the push API would create them."""

    sub_id: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, base_url: str) -> dict[str, Any]:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        p256dh = self.private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {"endpoint": f"{base_url}/wp/{self.sub_id}",
                "keys": {"p256dh": b64url_encode(p256dh), "auth": b64url_encode(self.auth)}}

    def token(self, base_url: str) -> str:
        return json.dumps(self.subscription(base_url))


@dataclass
class FakeWebPush(ServedFake):
    """`script[sub_id]`: actions consumed per request: ``ok``, ``drop``, or a status (``404``, ``410``,
    ``413``, ``429`` (with Retry-After: 1), ``500``, ``401``, ``403``, ``400``)."""

    delay: float = 0.0
    #: When set, pushes signed with another VAPID key get 403, like a real service.
    vapid_public_key: str = ""
    decrypt: bool = True
    browsers: dict[str, Browser] = field(default_factory=dict)
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    jwts: set[str] = field(default_factory=set)

    def browser(self, sub_id: str) -> Browser:
        self.browsers[sub_id] = Browser(sub_id)
        return self.browsers[sub_id]

    def _check_vapid(self, header: str) -> str:
        match = _AUTH.match(header)
        if not match:
            return "missing or malformed vapid Authorization"
        token, key = match.groups()
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
            claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.url,
                                options={"require": ["aud", "exp", "sub"]})
        except (ValueError, jwt.PyJWTError) as exc:
            return f"bad VAPID JWT: {exc}"
        if claims["exp"] > time.time() + 24 * 3600:
            return "exp more than 24 h ahead"
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            return "bad sub"
        if self.vapid_public_key and key != self.vapid_public_key:
            return "mismatch"
        self.jwts.add(token)
        return ""

    async def handle(self, req: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        sub_id = req.path.rsplit("/", 1)[-1]
        if req.method != "POST" or sub_id not in self.browsers:
            return Response(404)
        problem = self._check_vapid(req.headers.get("authorization", ""))
        if problem == "mismatch":
            return Response(403, b"VAPID key does not match the subscription")
        if problem:
            return Response(401, problem.encode())
        if not req.headers.get("ttl", "").isdigit():
            return Response(400, b"missing TTL")
        if req.headers.get("content-encoding") != "aes128gcm":
            return Response(400, b"unsupported content encoding")
        if len(req.body) > BODY_LIMIT:
            return Response(413)
        self.attempts[sub_id] += 1
        action = self.script[sub_id].pop(0) if self.script.get(sub_id) else "ok"
        if action == "drop":
            return DROP
        if action != "ok":
            headers = {"retry-after": "1"} if action == "429" else {}
            return Response(int(action), b"", headers)
        browser = self.browsers[sub_id]
        record: dict[str, Any] = {"sub": sub_id, "ttl": int(req.headers["ttl"]), "urgency": req.headers.get("urgency"),
                                  "topic": req.headers.get("topic"), "size": len(req.body)}
        if self.decrypt:
            record["payload"] = json.loads(decrypt(req.body, browser.private_key, browser.auth))
        self.received.append(record)
        return Response(201, b"", {"location": f"{self.url}/m/{len(self.received)}"})
