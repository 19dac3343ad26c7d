"""Module cache (memory LRU + HMAC-signed disk artifacts) and compile-time validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmhost.runtime import InvalidModule, Runtime

from .helpers import WELCOME, FakeSender, sandbox

WELCOME_WASM = (WELCOME / "welcome.wasm").read_bytes()


async def test_second_compile_is_a_memory_hit(runtime: Runtime) -> None:
    first = runtime.compile(WELCOME_WASM, namespace="acme")
    second = runtime.compile(WELCOME_WASM, namespace="acme")
    assert first is second and first.origin == "compiled"
    stats = runtime.cache_stats
    assert (stats.compiles, stats.memory_hits, stats.disk_hits) == (1, 1, 0)


async def _fresh(tmp_path: Path, key: bytes = b"k" * 32) -> Runtime:
    return Runtime(FakeSender(), cache_dir=tmp_path, cache_key=key)


async def test_new_runtime_loads_from_disk_and_runs(tmp_path: Path) -> None:
    rt1 = await _fresh(tmp_path)
    rt1.compile(WELCOME_WASM, namespace="acme")
    await rt1.aclose()
    assert rt1.cache_stats.disk_writes == 1 and len(list(tmp_path.glob("*/*.cwasm"))) == 1

    rt2 = await _fresh(tmp_path)
    try:
        compiled = rt2.compile(WELCOME_WASM, namespace="acme")
        assert compiled.origin == "disk"
        assert (rt2.cache_stats.disk_hits, rt2.cache_stats.compiles) == (1, 0)
        result = await rt2.invoke("acme", compiled, b'{"user":"alice"}')
        assert result.ok and result.output == "welcomed alice: 1/1 devices"
    finally:
        await rt2.aclose()


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign-key", "renamed"])
async def test_damaged_or_foreign_artifacts_are_recompiled_not_loaded(tmp_path: Path, damage: str) -> None:
    rt1 = await _fresh(tmp_path)
    rt1.compile(WELCOME_WASM, namespace="acme")
    other = rt1.compile(sandbox("loop.wat"), namespace="acme")
    await rt1.aclose()
    (path,) = [p for p in tmp_path.glob("*/*.cwasm") if not p.name.startswith(other.sha256)]
    data = path.read_bytes()
    key = b"k" * 32
    if damage == "flip":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign-key":
        key = b"x" * 32  # a file signed by someone else
    else:  # another module's (valid, signed) artifact under this module's name
        other_path = next(tmp_path.glob(f"*/{other.sha256}-*.cwasm"))
        path.write_bytes(other_path.read_bytes())

    rt2 = await _fresh(tmp_path, key)
    try:
        compiled = rt2.compile(WELCOME_WASM, namespace="acme")
        assert compiled.origin == "compiled"
        stats = rt2.cache_stats
        assert (stats.disk_rejected, stats.disk_hits, stats.compiles) == (1, 0, 1)
        assert (await rt2.invoke("acme", compiled, b'{"user":"bob"}')).ok
        assert stats.disk_writes == 1  # replaced by a good artifact
    finally:
        await rt2.aclose()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (b"\0asm\x01\0\0\0garbage", "not a valid WebAssembly module"),
        (b"\xff\xfe\x00binary", "not a WebAssembly module"),
        ("(module (func", "WAT text does not parse"),
        ("", "empty"),
        (
            '(module (import "env" "abort" (func)) (memory (export "memory") 1)'
            ' (func (export "handle") (result i32) (i32.const 0)))',
            "import env.abort: only the 'wasmhost' and 'wasi_snapshot_preview1' modules",
        ),
        (
            '(module (import "wasmhost" "exec" (func (result i32))) (memory (export "memory") 1)'
            ' (func (export "handle") (result i32) (i32.const 0)))',
            "has no such host function",
        ),
        (
            '(module (import "wasmhost" "log" (func (param i32 i32) (result i32))) (memory (export "memory") 1)'
            ' (func (export "handle") (result i32) (i32.const 0)))',
            "import wasmhost.log has signature (i32, i32) -> (i32); ABI v1 defines (i32, i32, i32) -> (i32)",
        ),
        ('(module (memory (export "memory") 1))', "must export a function `handle: () -> i32`"),
        (
            '(module (memory (export "memory") 1) (func (export "handle") (param i32) (result i32) (i32.const 0)))',
            "export `handle` must be a function () -> (i32)",
        ),
        ('(module (func (export "handle") (result i32) (i32.const 0)))', "must export its linear memory"),
        (
            '(module (memory (export "memory") 5000) (func (export "handle") (result i32) (i32.const 0)))',
            "the platform maximum is 256 MiB",
        ),
        (
            '(module (import "wasmhost" "memory" (memory 1)) (func (export "handle") (result i32) (i32.const 0)))',
            "has no such host function",
        ),
    ],
)
async def test_invalid_modules_are_refused_with_a_reason(runtime: Runtime, source: bytes | str, reason: str) -> None:
    with pytest.raises(InvalidModule) as info:
        runtime.compile(source, namespace="acme")
    assert reason in str(info.value)


async def test_invoking_invalid_bytes_is_an_invalid_module_result(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", b"\0asm\x01\0\0\0garbage")
    data = result.to_dict()
    assert data["ok"] is False and data["code"] is None
    assert data["error"]["kind"] == "invalid_module"
    assert (await runtime.invoke("acme", sandbox("traps.wat"), b"\x04")).code == 7
