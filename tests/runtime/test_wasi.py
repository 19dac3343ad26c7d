"""WASI preview 1 guests: stdin is the input, stdout the output, stderr the log; nothing else."""

from __future__ import annotations

from wasmhost.runtime import Limits, Runtime

from .helpers import sandbox


async def test_stdin_stdout_stderr(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_echo.wat"), b"h\xc3\xa9llo")
    assert result.ok, (result.code, result.error)
    assert result.output == "echo: héllo"
    assert [(e.level, e.message) for e in result.logs] == [("info", "hello from stderr"), ("info", "partial")]


async def test_stdout_is_capped_like_output(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_echo.wat"), b"x" * 100, Limits(max_output_bytes=50))
    assert result.code == 10  # fd_write reported an error (EFBIG) past the cap
    assert result.output == "echo: " + "x" * 44


async def test_proc_exit_status_is_the_code(runtime: Runtime) -> None:
    result = await runtime.invoke("acme", sandbox("wasi_exit.wat"))
    assert result.error is None and result.code == 3 and not result.ok


async def test_no_filesystem(runtime: Runtime) -> None:
    # path_open on fd 3 (the first preopen, if there were one) must fail with EBADF (8).
    wat = """(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "etc/passwd")
      (func (export "handle") (result i32)
        (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 0)
                    (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 64))))"""
    result = await runtime.invoke("acme", wat)
    assert result.code == 8
