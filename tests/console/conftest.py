"""Browser fixtures: a real `wasmhost serve` process, a loopback ntfy fake, and Debian's Chromium driven
by Playwright (its own browser download is not available here; `.ci/setup.d/40-chromium.sh` installs it).

Screenshots of every page go to `docs/screenshots/` (named in the README) for reviewers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.fleet.gateways import ADMIN_TOKEN, GatewayProcess
from wasmhost.testing.ntfy import FakeNtfy

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("WASMHOST_CHROMIUM", "/usr/bin/chromium")

__all__ = ["ADMIN_TOKEN", "SHOTS", "Loop"]


class Loop:
    """An event loop on its own thread, for the loopback fakes (the browser API used here is synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakes", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# Module scope: while Playwright's synchronous API is open, its event loop counts as running on this
# thread, and the asyncio tests that come after would fail to start theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip(f"no Chromium at {CHROMIUM} (run .ci/setup.d/40-chromium.sh)")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Loop]:
    loop = Loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def ntfy(fakes: Loop) -> Iterator[FakeNtfy]:
    fake = fakes.run(FakeNtfy(token="ntfy-access-token-123").start())
    try:
        yield fake
    finally:
        fakes.run(fake.aclose())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("console")
    # Two worker processes, as in production: a page's requests land on either, so what one worker
    # records must be read back through the store.
    gw = GatewayProcess("console", f"sqlite:///{tmp / 'wasmhost.db'}", tmp, WASMHOST_WORKERS="2").start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that fails the test on any dialog or script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    tab.dialogs = []  # type: ignore[attr-defined]
    tab.errors = []  # type: ignore[attr-defined]
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    # A page that needed something the CSP forbids (inline style or script) logs a violation here.
    tab.on("console", lambda msg: tab.errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()
    assert tab.errors == [], tab.errors
