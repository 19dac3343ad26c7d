"""A fake ntfy server: checks what ntfy checks (auth, topic names, JSON publish at the root, size limits)
and answers with ntfy's JSON errors. Failures are scripted per topic."""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ._server import DROP, Request, Response, ServedFake

__all__ = ["FakeNtfy"]

_TOPIC = re.compile(r"^[-_A-Za-z0-9]{1,64}$")
MESSAGE_LIMIT = 4096
JSON_LIMIT = 2 * MESSAGE_LIMIT


def _error(status: int, code: int, text: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"code": code, "http": status, "error": text, "link": "https://ntfy.sh/docs"}).encode()
    return Response(status, body, {"content-type": "application/json", **(headers or {})})


@dataclass
class FakeNtfy(ServedFake):
    """`token` or `username`/`password` turn auth on. `script[topic]` is a list of actions consumed per
    request: ``ok``, ``drop``, ``400``, ``401``, ``413``, ``429``, ``42908``, ``42909``, ``500``, ``507``."""

    token: str = ""
    username: str = ""
    password: str = ""
    delay: float = 0.0
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    published: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    auth_seen: list[str] = field(default_factory=list)

    def _authorized(self, header: str) -> bool:
        if not (self.token or self.username):
            return True
        if self.token and header == f"Bearer {self.token}":
            return True
        if header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            if self.username and (user, pw) == (self.username, self.password):
                return True
            if self.token and not user and pw == self.token:
                return True
        return False

    async def handle(self, req: Request) -> Response:
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        if req.method not in ("POST", "PUT"):
            return _error(405, 40501, "method not allowed")
        self.auth_seen.append(req.headers.get("authorization", ""))
        if req.path == "/":
            if len(req.body) > JSON_LIMIT:
                return _error(413, 41303, "JSON body too large")
            try:
                doc = json.loads(req.body)
            except ValueError:
                return _error(400, 40017, "invalid request: request body must be message JSON")
            topic = str(doc.get("topic", ""))
            publish = {k: doc.get(k) for k in ("topic", "message", "title", "priority", "tags", "cache")}
        else:
            topic = req.path.strip("/").split("/")[-1]
            if len(req.body) > MESSAGE_LIMIT:
                return _error(400, 40014, "attachments not allowed")
            publish = {"topic": topic, "message": req.body.decode("utf-8"), "unifiedpush": True, "query": req.query}
        if not _TOPIC.match(topic):
            return _error(400, 40009, "invalid topic")
        if not self._authorized(req.headers.get("authorization", "")):
            return _error(401, 40101, "unauthorized")
        self.attempts[topic] += 1
        action = self.script[topic].pop(0) if self.script.get(topic) else "ok"
        if action == "drop":
            return DROP
        if action == "400":
            return _error(400, 40007, "invalid priority")
        if action == "401":
            return _error(401, 40101, "unauthorized")
        if action == "413":
            return _error(413, 41301, "attachment too large")
        if action == "429":
            return _error(429, 42901, "limit reached: too many requests", {"retry-after": "1"})
        if action in ("42908", "42909"):
            return _error(429, int(action), "limit reached")
        if action in ("500", "507"):
            return _error(int(action), int(action) * 100 + 1, "server error")
        if len((publish.get("message") or "").encode()) > MESSAGE_LIMIT:
            return _error(400, 40014, "attachments not allowed")
        self.published.append(publish)
        out = {"id": f"m{len(self.published)}", "time": 0, "event": "message", "topic": topic}
        return Response(200, json.dumps(out).encode(), {"content-type": "application/json"})
