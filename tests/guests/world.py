"""One set of followers every example is run against, with a sender that knows their devices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from wasmhost.push.accepted import Accepted
from wasmhost.push.message import PushMessage
from wasmhost.push.report import DeviceResult, SendReport

AUTHOR = 'Ann "A" ✓'
TEXT = "new post:\nhéllo ✓ <b>&</b>"
#: alice has two devices, bob one, carol none; "" is refused by the host (INVAL).
DEVICES = {"alice": 2, "bob": 1, "carol": 0}
FOLLOWERS = ["alice", "bob", "carol", ""]
EXPECTED = {"sent": 2, "failed": 1, "no_devices": 1}
#: The message every language must build from the input.
MESSAGE = {"title": f"{AUTHOR} posted", "body": TEXT, "data": {"author": AUTHOR}}
INPUT = json.dumps({"author": AUTHOR, "followers": FOLLOWERS, "text": TEXT}, ensure_ascii=False).encode()


@dataclass
class DeviceSender:
    """Answers each send with one successful outbox delivery per device the user has."""

    calls: list[tuple[str, str, PushMessage]] = field(default_factory=list)

    async def accept(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None
    ) -> Accepted:
        self.calls.append((namespace, user_id, message))
        n = DEVICES.get(user_id, 0)
        return Accepted(SendReport([DeviceResult(f"{user_id}-{i}", "outbox", True, 200, attempts=1) for i in range(n)]))


@dataclass
class Followers:
    sender: DeviceSender
    input: bytes = INPUT
    expected: dict[str, Any] = field(default_factory=lambda: dict(EXPECTED))


@pytest.fixture
def followers() -> Followers:
    return Followers(DeviceSender())
