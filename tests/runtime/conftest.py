"""Runtime fixtures: a recording fake sender and a Runtime per test (each test has its own loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wasmhost.runtime import Runtime

from .helpers import FakeSender


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture
async def runtime(sender: FakeSender) -> AsyncIterator[Runtime]:
    rt = Runtime(sender)
    try:
        yield rt
    finally:
        await rt.aclose()
