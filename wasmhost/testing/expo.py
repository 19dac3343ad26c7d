"""A fake Expo push service: checks what Expo checks (≤ 100 messages, gzip bodies, bearer token when
enhanced security is on, token format, ≤ 1000 receipt ids) and scripts ticket, receipt and request failures."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ._server import DROP, Request, Response, ServedFake

__all__ = ["FakeExpo"]

_TOKEN = re.compile(r"^(?:ExponentPushToken|ExpoPushToken)\[[^\[\]\s]+\]$")
#: Script actions whose ticket is ok and whose receipt carries this error.
_RECEIPT_ERRORS = {"receipt_dead": "DeviceNotRegistered", "receipt_toobig": "MessageTooBig",
                   "receipt_rate": "MessageRateExceeded"}


def _errors(status: int, code: str, message: str, details: Any = None,
            headers: dict[str, str] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return Response(status, json.dumps({"errors": [error]}).encode(),
                    {"content-type": "application/json", **(headers or {})})


@dataclass
class FakeExpo(ServedFake):
    """`access_tokens`: when set, requests must carry one of them. `script[push_token]`: per-message
    actions consumed per send (``ok``, ``dead``, ``toobig``, ``rate``, and ``receipt_dead``, ``receipt_toobig``,
    ``receipt_rate``: an ok ticket whose receipt has that error).
    `request_script`: per-request actions (``429``, ``500``, ``drop``, ``401``, ``400-echo``).
    `projects`: push-token substring → project; a request mixing projects gets PUSH_TOO_MANY_EXPERIENCE_IDS."""

    access_tokens: set[str] = field(default_factory=set)
    delay: float = 0.0
    script: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    request_script: list[str] = field(default_factory=list)
    projects: dict[str, str] = field(default_factory=dict)
    #: Receipts stay "not ready" (absent) for this many polls.
    receipt_not_ready_polls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    receipt_requests: list[list[str]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def handle(self, req: Request) -> Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        auth = req.headers.get("authorization", "")
        if self.access_tokens and auth.removeprefix("Bearer ") not in self.access_tokens:
            return _errors(401, "UNAUTHORIZED", "The bearer token is invalid")
        body = gzip.decompress(req.body) if req.headers.get("content-encoding") == "gzip" else req.body
        if req.path == "/--/api/v2/push/getReceipts":
            ids = json.loads(body)["ids"]
            if len(ids) > 1000:
                return _errors(400, "PUSH_TOO_MANY_RECEIPTS", "more than 1000 ids")
            self.receipt_requests.append(ids)
            if len(self.receipt_requests) <= self.receipt_not_ready_polls:
                return Response(200, b'{"data":{}}', {"content-type": "application/json"})
            data = {i: self.receipts[i] for i in ids if i in self.receipts}
            return Response(200, json.dumps({"data": data}).encode(), {"content-type": "application/json"})
        if req.path != "/--/api/v2/push/send":
            return Response(404)
        doc = json.loads(body)
        messages = doc if isinstance(doc, list) else [doc]
        self.requests.append({"auth": auth, "gzip": req.headers.get("content-encoding") == "gzip",
                              "size": len(req.body), "to": [m["to"] for m in messages]})
        if len(messages) > 100:
            return _errors(400, "PUSH_TOO_MANY_NOTIFICATIONS", "more than 100 messages")
        if self.request_script:
            action = self.request_script.pop(0)
            if action == "drop":
                return DROP
            if action == "429":
                return _errors(429, "TOO_MANY_REQUESTS", "rate limited", headers={"retry-after": "1"})
            if action == "401":
                return _errors(401, "UNAUTHORIZED", "bad token")
            if action == "400-echo":  # an error text that quotes every token of the request
                return _errors(400, "VALIDATION_ERROR", "bad messages: " + ", ".join(m["to"] for m in messages))
            return _errors(int(action), "INTERNAL_SERVER_ERROR", "boom")
        if self.projects:
            groups: dict[str, list[str]] = defaultdict(list)
            for m in messages:
                project = next((p for k, p in self.projects.items() if k in m["to"]), "@default")
                groups[project].append(m["to"])
            if len(groups) > 1:
                return _errors(400, "PUSH_TOO_MANY_EXPERIENCE_IDS", "mixed projects", dict(groups))
        tickets = []
        for m in messages:
            token = m["to"]
            action = self.script[token].pop(0) if self.script.get(token) else "ok"
            if not _TOKEN.match(token):
                tickets.append({"status": "error", "message": "not a valid token",
                                "details": {"error": "DeviceNotRegistered"}})
            elif action == "dead":
                tickets.append({"status": "error", "message": f"{token} is not a registered push notification "
                                "recipient", "details": {"error": "DeviceNotRegistered", "expoPushToken": token}})
            elif action in ("toobig", "rate"):
                error = "MessageTooBig" if action == "toobig" else "MessageRateExceeded"
                tickets.append({"status": "error", "message": "failed", "details": {"error": error}})
            else:
                rid = f"r{len(self.receipts) + 1}"
                receipt_error = _RECEIPT_ERRORS.get(action)
                self.receipts[rid] = {"status": "ok"} if receipt_error is None else {
                    "status": "error", "message": f"{token}: {receipt_error}", "details": {"error": receipt_error}}
                tickets.append({"status": "ok", "id": rid})
                self.delivered.append(m)
        return Response(200, json.dumps({"data": tickets}).encode(), {"content-type": "application/json"})
