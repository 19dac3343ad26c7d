"""Python and JavaScript components get the sandbox core modules get (tests/runtime/test_sandbox.py).

Probe components (tests/guests/probes) are built once per session and run a list of ops from their
input: the same namespace binding, fuel/deadline/memory limits, caps and error codes must hold.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.helpers import FakeSender
from wasmhost.push.errors import PushNotConfigured, QueueFull
from wasmhost.runtime import (
    INVAL,
    LIMIT,
    NOT_CONFIGURED,
    RATE_LIMITED,
    TIMEOUT,
    TOO_BIG,
    CompiledComponent,
    InvocationResult,
    Limits,
    Runtime,
)
from wasmhost.runtime.component import ComponentCache, is_component
from wasmhost.runtime.engine import engine_host

from .toolchains import EXAMPLES, build_env, missing_toolchain

PROBES = Path(__file__).parent / "probes"
LANGS = ["python", "javascript"]
MSG = json.dumps({"title": "hi", "body": "✓"})


def _build(lang: str, out: Path) -> None:
    env = build_env()
    if lang == "python":
        cmd = [env.get("COMPONENTIZE_PY", "componentize-py"), "-d", str(EXAMPLES / "wit"), "-w", "guest",
               "componentize", "--stub-wasi", "app", "-o", str(out)]
    else:
        cmd = [str(EXAMPLES / "javascript" / "node_modules" / ".bin" / "componentize-qjs"), "--wit",
               str(EXAMPLES / "wit"), "--js", "probe.js", "-n", "guest", "--sync", "--opt-size", "--stub-wasi",
               "-o", str(out)]
    proc = subprocess.run(cmd, cwd=PROBES, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, CompiledComponent | str]]:
    """lang -> the compiled probe, or the reason it cannot be built here."""
    out: dict[str, CompiledComponent | str] = {}
    cache = ComponentCache(engine_host())
    folder = tmp_path_factory.mktemp("probes")
    for lang in LANGS:
        why = missing_toolchain(lang)
        if why:
            out[lang] = why
            continue
        wasm = folder / f"{lang}.wasm"
        _build(lang, wasm)
        data = wasm.read_bytes()
        assert is_component(data)
        out[lang] = cache.get("acme", data)
    yield out


@pytest.fixture(params=LANGS)
def probe(request: pytest.FixtureRequest, probes: dict[str, CompiledComponent | str]) -> CompiledComponent:
    found = probes[request.param]
    if isinstance(found, str):
        from .toolchains import require_toolchain

        require_toolchain(request.param)
    assert isinstance(found, CompiledComponent)
    return found


async def run(
    probe: CompiledComponent, ops: list[Any], *, sender: FakeSender | None = None, limits: Limits | None = None,
    namespace: str = "acme", limiter: Any = None,
) -> tuple[list[Any] | None, InvocationResult]:
    runtime = Runtime(sender or FakeSender(), send_limiter=limiter)
    try:
        result = await runtime.invoke(namespace, probe, json.dumps(ops).encode(), limits)
    finally:
        await runtime.aclose()
    found = [e.message for e in result.logs if e.message.startswith("results ")]
    return (json.loads(found[-1][len("results "):]) if found else None), result


async def test_namespace_is_the_one_bound_at_invoke(probe: CompiledComponent) -> None:
    sender = FakeSender()
    for namespace in ("tenant-a", "tenant-c"):
        codes, result = await run(probe, [["send", "tenant-b/alice", MSG]], sender=sender, namespace=namespace)
        assert result.ok and codes == [1]
    assert [(ns, user) for ns, user, *_ in sender.calls] == [("tenant-a", "tenant-b/alice"),
                                                             ("tenant-c", "tenant-b/alice")]


async def test_infinite_loop_runs_out_of_fuel(probe: CompiledComponent) -> None:
    _, result = await run(probe, [["spin"]], limits=Limits(fuel=20_000_000))
    assert result.error is not None and result.error.kind == "out_of_fuel", result.error
    assert result.fuel_used == 20_000_000 and result.code is None


async def test_infinite_loop_hits_the_deadline(probe: CompiledComponent) -> None:
    _, result = await run(probe, [["spin"]], limits=Limits(fuel=1_000_000_000, timeout_ms=50))
    assert result.error is not None and result.error.kind in ("timeout", "out_of_fuel")
    assert result.duration_ms < 5_000


async def test_memory_is_capped(probe: CompiledComponent) -> None:
    codes, result = await run(probe, [["alloc", 64]], limits=Limits(memory_mb=32))
    refused = codes == ["failed"] or (result.error is not None and result.error.kind in ("trap", "memory"))
    assert refused, (codes, result.error)
    codes, result = await run(probe, [["alloc", 64]], limits=Limits(memory_mb=160))
    assert result.ok and codes == ["ok"], result.error  # the cap, not the guest, was what said no


async def test_invalid_sends_get_the_abi_codes(probe: CompiledComponent) -> None:
    sender = FakeSender()
    codes, result = await run(probe, [
        ["send", "", MSG],
        ["send", "u" * 513, MSG],
        ["send", "alice", "not json"],
        ["send", "alice", "[1]"],
        ["send", "alice", json.dumps({"body": "x" * (16 * 1024)})],
        ["wait", 1],
        ["send", "alice", MSG],
        ["wait", 1],
        ["wait", 0],
    ], sender=sender)
    assert codes == [INVAL, TOO_BIG, INVAL, INVAL, TOO_BIG, INVAL, 1, 1, INVAL]
    assert [user for _, user, *_ in sender.calls] == ["alice"]
    text = "\n".join(e.message for e in result.logs)
    assert "user id is empty" in text and "not valid JSON" in text and "the limit is 16384" in text


async def test_more_sends_than_the_cap_get_limit(probe: CompiledComponent) -> None:
    codes, result = await run(probe, [["send", "a", MSG]] * 3, limits=Limits(max_sends=2))
    assert codes == [1, 2, LIMIT] and len(result.sends) == 2


@pytest.mark.parametrize(("sender", "codes"), [
    (FakeSender(error=PushNotConfigured("acme")), [NOT_CONFIGURED, INVAL]),  # refused: no ticket
    (FakeSender(hang_accept=True), [TIMEOUT, TIMEOUT]),  # not accepted by the deadline
    (FakeSender(hang=True), [1, TIMEOUT]),  # accepted, never delivered
])
async def test_send_failures_reach_the_guest_as_codes(probe: CompiledComponent, sender: FakeSender,
                                                      codes: list[int]) -> None:
    got, result = await run(probe, [["send", "a", MSG], ["wait", 1]], sender=FakeSender(
        error=sender.error, hang=sender.hang, hang_accept=sender.hang_accept), limits=Limits(timeout_ms=1_000))
    assert got == codes
    assert all(s["ok"] is False for s in result.sends)


async def test_push_send_to_user_waits_for_the_acceptance(probe: CompiledComponent) -> None:
    # Refused 0.2 s after the call: only a guest still waiting for the acceptance can get the code.
    refusing = FakeSender(accept_delay=0.2, error=QueueFull("namespace has 10 deliveries queued (max_queued)"))
    got, result = await run(probe, [["send", "a", MSG], ["send", "b", MSG]], sender=refusing)
    assert got == [RATE_LIMITED, RATE_LIMITED] and result.sends == []
    got, result = await run(probe, [["send", "a", MSG]], sender=FakeSender(accept_delay=0.05))
    assert got == [1] and result.sends[0]["ok"] is True


async def test_rate_limiter_refuses_with_rate_limited(probe: CompiledComponent) -> None:
    class Limiter:
        calls = 0

        def try_acquire(self, namespace: str) -> bool:
            self.calls += 1
            return self.calls <= 1

    codes, _ = await run(probe, [["send", "a", MSG], ["send", "b", MSG]], limiter=Limiter())
    assert codes == [1, RATE_LIMITED]


async def test_output_and_log_caps_return_limit(probe: CompiledComponent) -> None:
    codes, result = await run(probe, [["output", 600], ["output", 600]], limits=Limits(max_output_bytes=1000))
    assert codes == [0, LIMIT] and len(result.output_bytes) == 1000
    _, result = await run(probe, [["log", 20, 10]], limits=Limits(max_log_lines=5))
    assert len(result.logs) == 6 and "dropped" in result.logs[-1].message
