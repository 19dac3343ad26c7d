"""wasmtime's private C API (``wasmtime._ffi``) is used in one module, for one pinned wasmtime version.

`wasmhost.runtime.ffi` declares prototypes for C functions whose signatures wasmtime may change in
any release (one already differs from wasmtime-py's own binding). An upgrade must be a deliberate
review of that module: this test fails when the installed wasmtime is not the pinned major version,
or when any other module starts using the private API.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import wasmhost

PINNED_MAJOR = 50
PACKAGE = Path(wasmhost.__file__).parent


def test_the_installed_wasmtime_is_the_pinned_version() -> None:
    version = metadata.version("wasmtime")
    assert int(version.split(".")[0]) == PINNED_MAJOR, (
        f"wasmtime {version} is installed; wasmhost.runtime.ffi was written for {PINNED_MAJOR}.x: review every "
        "prototype and async-API use there, then update this pin and pyproject.toml")


def test_the_pin_in_pyproject_matches() -> None:
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert f"wasmtime>={PINNED_MAJOR},<{PINNED_MAJOR + 1}" in pyproject


def test_only_ffi_uses_the_private_api() -> None:
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(r"wasmtime\._ffi|from wasmtime import _ffi|wasmtime_[a-z_]+\(", path.read_text())
        and path.name != "ffi.py"
    )
    assert users == [], f"only wasmhost/runtime/ffi.py may use wasmtime._ffi; also: {users}"
