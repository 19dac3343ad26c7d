"""Compiles are checked before they start, bounded while they run, cached per namespace, and refusals stick."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.wasmgen import many_functions
from wasmhost.runtime import CompileLimits, InvalidModule, Runtime
from wasmhost.runtime.cache import namespace_dir
from wasmhost.runtime.slots import FairSlots

from .helpers import WELCOME, FakeSender

WELCOME_WASM = (WELCOME / "welcome.wasm").read_bytes()
KEY = b"k" * 32
#: Legitimate (within the function limit) and takes a measurable while to compile.
SLOW = many_functions(20_000, body_ops=4)
#: Takes several seconds of CPU to compile even on a fast, quiet machine (SLOW may finish within 1 s).
SLOWEST = many_functions(45_000, body_ops=32)
#: Compiles to more than 1 MiB.
SMALLER = many_functions(5_000)


def _runtime(tmp_path: Path | None = None, **limits: int) -> Runtime:
    return Runtime(FakeSender(), cache_dir=tmp_path, cache_key=KEY, compile_limits=CompileLimits(**limits))


# -- the contract, before compiling --------------------------------------------------------------


async def test_missing_handle_lists_the_exports_and_how_to_export_handle(runtime: Runtime) -> None:
    with pytest.raises(InvalidModule) as info:
        runtime.compile(many_functions(3, export_handle=False), namespace="acme")
    text = str(info.value)
    assert "it exports function `main`, memory `memory`" in text
    assert "(it exports none)" not in text
    for lang in ("C:", "Rust:", "Zig:", "Go:", "AssemblyScript:"):
        assert lang in text
    assert 'WASMHOST_EXPORT("handle")' in text and "//go:wasmexport handle" in text


async def test_a_module_exporting_no_functions_says_so(runtime: Runtime) -> None:
    with pytest.raises(InvalidModule, match="it exports no functions at all \\(only memory `memory`\\)"):
        runtime.compile('(module (memory (export "memory") 1) (func $main (result i32) (i32.const 0)))',
                        namespace="acme")
    with pytest.raises(InvalidModule, match="it exports nothing at all"):
        runtime.compile("(module (func $main))", namespace="acme")


async def test_the_300k_function_module_is_refused_before_compiling(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    try:
        attack = many_functions(300_000)
        busy = asyncio.ensure_future(rt.compile_async(SLOW, namespace="mallory"))  # holds mallory's compile slot
        await asyncio.sleep(0.2)
        with pytest.raises(InvalidModule) as info:
            await rt.compile_async(attack, namespace="mallory")
        assert not busy.done()  # refused without waiting for a compile slot, let alone compiling
        assert "300,001 functions; the limit is 50,000 per module (WASMHOST_MAX_MODULE_FUNCTIONS)" in str(info.value)
        await busy
        assert rt.cache_stats.compiles == 1 and len(list(tmp_path.glob("*/*.cwasm"))) == 1
    finally:
        await rt.aclose()


def test_the_function_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMHOST_MAX_MODULE_FUNCTIONS", "10")
    monkeypatch.setenv("WASMHOST_COMPILE_CPU_SECONDS", "5")
    monkeypatch.setenv("WASMHOST_COMPILE_MEMORY_MB", "300")
    monkeypatch.setenv("WASMHOST_MAX_COMPILED_MB", "2")
    limits = CompileLimits.from_env()
    assert (limits.max_functions, limits.cpu_seconds) == (10, 5)
    assert (limits.memory_bytes, limits.max_artifact_bytes) == (300 << 20, 2 << 20)
    monkeypatch.setenv("WASMHOST_COMPILE_CPU_SECONDS", "soon")
    with pytest.raises(ValueError, match="WASMHOST_COMPILE_CPU_SECONDS must be a positive integer"):
        CompileLimits.from_env()


# -- bounded compiles ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"cpu_seconds": 1}, "used more than 1 s of CPU time (WASMHOST_COMPILE_CPU_SECONDS)"),
        ({"memory_bytes": 40 << 20}, "needed more than 40 MiB of memory (WASMHOST_COMPILE_MEMORY_MB)"),
        ({"max_artifact_bytes": 1 << 20}, "the limit is 1 MiB (WASMHOST_MAX_COMPILED_MB)"),
    ],
)
async def test_compiles_beyond_a_limit_are_refused_and_the_refusal_is_cached(
    tmp_path: Path, limits: dict[str, int], reason: str
) -> None:
    slow = SMALLER if "max_artifact_bytes" in limits else SLOWEST if "cpu_seconds" in limits else SLOW
    rt = _runtime(tmp_path, **limits)
    try:
        with pytest.raises(InvalidModule, match=reason.replace("(", "\\(").replace(")", "\\)")):
            await rt.compile_async(slow, namespace="acme")
        started = time.monotonic()
        with pytest.raises(InvalidModule, match="WASMHOST_"):
            await rt.compile_async(slow, namespace="acme")
        assert rt.cache_stats.refusal_hits == 1 and time.monotonic() - started < 2
    finally:
        await rt.aclose()
    again = _runtime(tmp_path, **limits)  # another process sharing the folder
    try:
        with pytest.raises(InvalidModule, match="WASMHOST_"):
            again.compile(slow, namespace="acme")
        assert again.cache_stats.refusal_hits == 1
    finally:
        await again.aclose()


async def test_a_refusal_made_under_other_limits_is_not_reused(tmp_path: Path) -> None:
    strict = _runtime(tmp_path, max_artifact_bytes=1 << 20)
    with pytest.raises(InvalidModule, match="WASMHOST_MAX_COMPILED_MB"):
        strict.compile(SMALLER, namespace="acme")
    await strict.aclose()
    relaxed = _runtime(tmp_path)
    try:
        assert relaxed.compile(SMALLER, namespace="acme").origin == "compiled"
    finally:
        await relaxed.aclose()


async def test_contract_refusals_are_cached_per_namespace(runtime: Runtime) -> None:
    bad = many_functions(3, export_handle=False)
    for _ in range(2):
        with pytest.raises(InvalidModule):
            runtime.compile(bad, namespace="acme")
    assert runtime.cache_stats.refusal_hits == 1
    with pytest.raises(InvalidModule):
        runtime.compile(bad, namespace="globex")  # not told by acme's refusal
    assert runtime.cache_stats.refusal_hits == 1


# -- one tenant's compile does not queue another's ------------------------------------------------


async def test_another_namespaces_small_compile_is_not_queued_behind_a_big_one() -> None:
    rt = Runtime(FakeSender(), compile_slots=2)
    try:
        done: list[str] = []

        async def deploy(namespace: str, source: bytes) -> None:
            await rt.compile_async(source, namespace=namespace)
            done.append(namespace)

        attacker = [asyncio.ensure_future(deploy("mallory", many_functions(20_000, body_ops=4, salt=i)))
                    for i in range(2)]
        await asyncio.sleep(0.3)  # the attacker's compiles have the slots they can get
        assert rt.compile_slots.running("mallory") == 1  # one at a time, the others wait their turn
        await deploy("victim", WELCOME_WASM)
        assert done == ["victim"]  # before any of the attacker's
        await asyncio.gather(*attacker)
    finally:
        await rt.aclose()


async def test_fair_slots_go_round_robin_between_waiting_namespaces() -> None:
    slots = FairSlots(1, per_namespace=1)
    order: list[str] = []
    release = asyncio.Event()

    async def job(namespace: str) -> None:
        async with slots.hold(namespace):
            order.append(namespace)
            await release.wait()

    first = asyncio.ensure_future(job("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(job(ns)) for ns in ("a", "a", "b", "c")]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["a", "a", "b", "c", "a"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_gives_up_its_turn() -> None:
    slots = FairSlots(1)
    async with slots.hold("a"):
        waiter = asyncio.ensure_future(slots.hold("b").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with slots.hold("c"):
        assert slots.in_use == 1


# -- per-namespace artifacts -----------------------------------------------------------------------


async def test_identical_bytes_in_another_namespace_compile_instead_of_hitting_its_artifact(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    try:
        first = rt.compile(WELCOME_WASM, namespace="acme")
        second = rt.compile(WELCOME_WASM, namespace="globex")
        assert first is not second and second.origin == "compiled"
        assert (rt.cache_stats.compiles, rt.cache_stats.memory_hits, rt.cache_stats.disk_hits) == (2, 0, 0)
        folders = {p.parent for p in tmp_path.glob("*/*.cwasm")}
        assert len(folders) == 2 and all(f.stat().st_mode & 0o777 == 0o700 for f in folders)
    finally:
        await rt.aclose()
    later = _runtime(tmp_path)
    try:
        assert later.compile(WELCOME_WASM, namespace="acme").origin == "disk"
        assert later.compile(WELCOME_WASM, namespace="initech").origin == "compiled"
    finally:
        await later.aclose()


async def test_an_artifact_copied_into_another_namespaces_folder_does_not_verify(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    rt.compile(WELCOME_WASM, namespace="acme")
    rt.compile(WELCOME_WASM, namespace="globex")
    await rt.aclose()
    (acme,) = (tmp_path / namespace_dir("acme")).glob("*.cwasm")
    (globex,) = (tmp_path / namespace_dir("globex")).glob("*.cwasm")
    globex.write_bytes(acme.read_bytes())
    later = _runtime(tmp_path)
    try:
        assert later.compile(WELCOME_WASM, namespace="globex").origin == "compiled"
        assert later.cache_stats.disk_rejected == 1
    finally:
        await later.aclose()


# -- disk is bounded -----------------------------------------------------------------------------


async def test_forget_deletes_the_namespaces_artifact_only(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    try:
        module = rt.compile(WELCOME_WASM, namespace="acme")
        rt.compile(WELCOME_WASM, namespace="globex")
        rt.forget("acme", module.sha256)
        assert not list((tmp_path / namespace_dir("acme")).glob("*.cwasm"))
        assert len(list((tmp_path / namespace_dir("globex")).glob("*.cwasm"))) == 1
        assert rt.cached("acme", module.sha256) is None and rt.cached("globex", module.sha256) is not None
        assert rt.compile(WELCOME_WASM, namespace="acme").origin == "compiled"
    finally:
        await rt.aclose()


async def test_the_artifact_folder_keeps_under_its_cap_evicting_the_least_recently_used(tmp_path: Path) -> None:
    sources = [many_functions(50, salt=i) for i in range(3)]
    probe = _runtime(tmp_path / "probe")
    size = len(probe.compile(sources[0], namespace="acme").module.serialize())
    await probe.aclose()
    # Room for two artifacts (plus headers), not three.
    rt = Runtime(FakeSender(), cache_dir=tmp_path / "c", cache_key=KEY, cache_max_bytes=2 * size + 4096)
    try:
        a = rt.compile(sources[0], namespace="acme")
        b = rt.compile(sources[1], namespace="acme")
        past = time.time() - 600
        for module in (a, b):
            path = rt._cache.path_for("acme", module.sha256)
            assert path is not None
            os.utime(path, (past, past))
        rt._cache._touched.clear()
        rt.compile(sources[0], namespace="acme")  # a is used again: b is now the least recently used
        rt.compile(sources[2], namespace="acme")
        left = {p.name.split("-")[0] for p in (tmp_path / "c").glob("*/*.cwasm")}
        assert left == {a.sha256, rt.compile(sources[2], namespace="acme").sha256}
        assert rt.cache_stats.evictions == 1
        total = sum(p.stat().st_size for p in (tmp_path / "c").glob("*/*"))
        assert total <= 2 * size + 4096
    finally:
        await rt.aclose()


async def test_one_compile_per_namespace_across_processes_sharing_the_folder(tmp_path: Path) -> None:
    # Two runtimes on one folder stand for two gateway worker processes (flock locks are per open file).
    first, second = _runtime(tmp_path), _runtime(tmp_path)
    try:
        busy = asyncio.ensure_future(first.compile_async(SLOW, namespace="mallory"))
        await asyncio.sleep(0.3)
        other = asyncio.ensure_future(second.compile_async(many_functions(10, salt=1), namespace="mallory"))
        await second.compile_async(WELCOME_WASM, namespace="victim")  # another namespace does not wait
        assert not busy.done() and not other.done()  # mallory's second compile waits for its first
        await busy
        await other
    finally:
        await first.aclose()
        await second.aclose()


async def test_refusals_count_against_the_folder_cap(tmp_path: Path) -> None:
    rt = Runtime(FakeSender(), cache_dir=tmp_path, cache_key=KEY, cache_max_bytes=4096)
    try:
        for i in range(40):
            with pytest.raises(InvalidModule):
                rt.compile(many_functions(2, export_handle=False, salt=i), namespace="acme")
        assert sum(p.stat().st_size for p in tmp_path.glob("*/*")) <= 4096
        assert rt.cache_stats.evictions > 0
    finally:
        await rt.aclose()


async def test_messages_stay_short_whatever_the_names(runtime: Runtime) -> None:
    long = "x" * 100_000
    with pytest.raises(InvalidModule) as info:
        runtime.compile(f'(module (memory (export "memory") 1) (func (export "{long}")))', namespace="acme")
    assert len(str(info.value)) < 2000 and "x" * 64 + "…" in str(info.value)
    with pytest.raises(InvalidModule) as info:
        runtime.compile(f'(module (import "{long}" "f" (func)) (memory (export "memory") 1))', namespace="acme")
    assert len(str(info.value)) < 2000


async def test_artifacts_kept_in_memory_stay_within_a_byte_budget() -> None:
    from wasmhost.runtime.cache import ModuleCache
    from wasmhost.runtime.engine import engine_host

    sources = [many_functions(200, salt=i) for i in range(3)]
    probe = ModuleCache(engine_host())
    size = len(probe.get("acme", sources[0]).module.serialize())
    cache = ModuleCache(engine_host(), max_memory_bytes=2 * size + size // 2)  # room for two
    first = cache.get("acme", sources[0])
    cache.get("acme", sources[1])
    cache.get("acme", sources[2])
    assert cache.cached("acme", first.sha256) is None  # the least recently used went
    assert all(cache.cached("acme", cache.key_of(s)) is not None for s in sources[1:])
