"""Every example's checked-in .wasm is what its sources build to.

Deterministic builds (WAT, C, Zig, AssemblyScript, Rust, Go) are rebuilt and compared byte for byte.
Component builds (componentize-py, componentize-qjs) are not reproducible, so each carries a stamp:
the tool version and the sha256 of every input and of the output. The stamp must match the sources
and the checked-in .wasm, and a fresh build must carry the same tool and sources and still behave
(tests/guests/test_notify_followers.py runs every example end to end).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from wasmhost.runtime import Runtime

from .toolchains import EXAMPLE_LIST, Example, build, require_toolchain, stamp_lines
from .world import Followers

CORE = [e for e in EXAMPLE_LIST if e.kind == "core"]
COMPONENTS = [e for e in EXAMPLE_LIST if e.kind == "component"]


@pytest.mark.parametrize("example", EXAMPLE_LIST, ids=lambda e: e.lang)
def test_every_example_has_source_build_script_wasm_and_readme(example: Example) -> None:
    for rel in example.sources:
        assert (example.dir / rel).is_file(), rel
    assert (example.dir / "build.sh").is_file()
    assert example.wasm.is_file() and example.wasm.stat().st_size > 0
    readme = (example.dir / "README.md").read_text()
    for needed in ("build.sh", "wasmhost run", '"sent"'):
        assert needed in readme, f"{example.lang}/README.md should mention {needed}"


@pytest.mark.parametrize("example", CORE, ids=lambda e: e.lang)
def test_core_build_reproduces_the_checked_in_bytes(example: Example, tmp_path: Path) -> None:
    require_toolchain(example.lang)
    out = tmp_path / "rebuilt.wasm"
    build(example, out)
    rebuilt, checked_in = out.read_bytes(), example.wasm.read_bytes()
    assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(checked_in).hexdigest(), (
        f"guest_examples/{example.lang}/notify_followers.wasm is stale: run its build.sh and commit the result"
    )


@pytest.mark.parametrize("example", COMPONENTS, ids=lambda e: e.lang)
def test_component_stamp_matches_sources_and_wasm(example: Example) -> None:
    lines = example.stamp.read_text().splitlines()
    assert lines[0].startswith("tool: "), lines[0]
    assert lines[1:-1] == stamp_lines(example), (
        f"guest_examples/{example.lang}: sources changed since the .wasm was built: run build.sh and commit"
    )
    wasm_sha = hashlib.sha256(example.wasm.read_bytes()).hexdigest()
    assert lines[-1] == f"wasm: {wasm_sha}", "the checked-in .wasm is not the one the stamp describes"


PINNED_TOOLS = {"python": "componentize-py 0.25.1", "javascript": "componentize-qjs 0.4.5"}


@pytest.mark.parametrize("example", COMPONENTS, ids=lambda e: e.lang)
async def test_component_rebuild_has_the_same_stamp_and_behaves(
    example: Example, tmp_path: Path, followers: Followers
) -> None:
    require_toolchain(example.lang)
    out = tmp_path / "rebuilt.wasm"
    build(example, out)
    fresh = (tmp_path / "rebuilt.wasm.stamp").read_text().splitlines()
    checked_in = example.stamp.read_text().splitlines()
    assert fresh[0] == checked_in[0] == f"tool: {PINNED_TOOLS[example.lang]}"
    # Same inputs: the build script names them relative to the example folder, as recorded.
    assert [re.sub(r"\s+", " ", ln) for ln in fresh[1:-1]] == [re.sub(r"\s+", " ", ln) for ln in checked_in[1:-1]]
    runtime = Runtime(followers.sender)
    try:
        result = await runtime.invoke("acme", out.read_bytes(), followers.input)
    finally:
        await runtime.aclose()
    assert result.ok, (result.error, result.logs)
    assert json.loads(result.output) == followers.expected
