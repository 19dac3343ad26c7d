"""Runtime fixtures: a recording fake sender and a Runtime per test (each test has its own loop).

The ``runtime`` fixture runs each test against every executor (see `wasmhost.runtime.executor`):
``auto`` (core modules as fibers on the loop) and ``threads`` (every guest on the guest threads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wasmhost.runtime import Runtime

from .helpers import FakeSender


@pytest.fixture
def sender() -> FakeSender:
    return FakeSender()


@pytest.fixture(params=["auto", "threads"])
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def runtime(sender: FakeSender, executor: str) -> AsyncIterator[Runtime]:
    rt = Runtime(sender, executor=executor)  # type: ignore[arg-type]
    try:
        yield rt
    finally:
        await rt.aclose()
