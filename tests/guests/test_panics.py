"""A panicking Rust guest explains itself: the SDK's hook logs the message and location, and the trap
names the guest's own frames."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.runtime.helpers import FakeSender
from wasmhost.runtime import Runtime

from .toolchains import EXAMPLES, require_toolchain

SOURCE = """#[path = "SDK"]
mod wasmhost;
use wasmhost::json::{self, Value};

#[no_mangle]
pub extern "C" fn handle() -> i32 {
    let input = wasmhost::input();
    let doc = json::parse(std::str::from_utf8(&input).unwrap()).unwrap();
    let order = doc.get("order").and_then(Value::as_str).expect("order must be a string");
    let _ = wasmhost::output(order);
    0
}
"""


async def test_a_rust_panic_logs_its_message_and_location(tmp_path: Path) -> None:
    require_toolchain("rust")
    src = tmp_path / "lib.rs"
    src.write_text(SOURCE.replace("SDK", str(EXAMPLES / "sdk" / "rust" / "wasmhost.rs")))
    out = tmp_path / "order.wasm"
    subprocess.run(["/usr/bin/rustc", "--edition", "2021", "--target", "wasm32-unknown-unknown", "--crate-type",
                    "cdylib", "-C", "opt-level=s", "-C", "panic=abort", "-C", "lto", "-C", "strip=debuginfo",
                    f"--remap-path-prefix={tmp_path}=src", "-o", str(out), str(src)], check=True, timeout=300)
    runtime = Runtime(FakeSender())
    try:
        module = runtime.compile(out.read_bytes(), namespace="acme")
        fine = await runtime.invoke("acme", module, b'{"order": "A-17"}')
        assert fine.ok and fine.output == "A-17"
        result = await runtime.invoke("acme", module, b'{"order": 17}')
    finally:
        await runtime.aclose()
    assert [(e.level, e.message) for e in result.logs] == [
        ("error", "panic: panicked at 'order must be a string', src/lib.rs:9:58")
    ]
    assert result.error is not None and result.error.kind == "trap"
    assert result.error.message.endswith("guest frames: core::option::expect_failed ← handle"), result.error.message
