"""Shared fixtures: a real SQLite store in a temp folder, a fixed test key ring, fake providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from wasmhost.providers import quiet_http_loggers
from wasmhost.push.provider import Delivery, FailureKind, Outcome
from wasmhost.store import KeyRing, SQLiteStore

TEST_KEY = bytes(range(32))


@pytest.fixture(scope="session", autouse=True)
def _quiet_http_loggers() -> None:
    """What the wiring does before any client exists (`Services.open`); tests that build managers by
    hand check logs for secrets under the same settings."""
    quiet_http_loggers()


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing({1: TEST_KEY})


@pytest.fixture
async def sqlite_store(tmp_path: Path, keyring: KeyRing) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore(tmp_path / "wasmhost.db", keyring).open()
    try:
        yield store
    finally:
        await store.aclose()


class RecordingProvider:
    """A fake provider for unit tests: records deliveries, answers from a script."""

    def __init__(self, name: str, outcomes: Sequence[Outcome] = (), delay: float = 0.0, max_batch: int = 1) -> None:
        self.name = name
        self.max_batch = max_batch
        self.script = list(outcomes)
        self.delay = delay
        self.sent: list[Delivery] = []
        self.calls = 0
        self.closed = False

    async def send(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for d in deliveries:
            self.sent.append(d)
            out.append(self.script.pop(0) if self.script else Outcome.ok())
        return out

    async def aclose(self) -> None:
        self.closed = True


class OneProviderFactory:
    """A provider factory that builds the same provider for every namespace (a Manager's unit tests)."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    async def build(self, config: Any) -> list[Any]:
        return [self.provider]

    def release(self, providers: Any) -> None:
        pass

    async def aclose(self) -> None:
        pass


def dead(reason: str = "Unregistered", dead_since: float | None = None) -> Outcome:
    return Outcome.failed(FailureKind.DEAD_TARGET, reason, status=410, dead_since=dead_since)
