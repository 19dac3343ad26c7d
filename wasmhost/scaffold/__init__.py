"""`wasmhost new LANGUAGE NAME`: a function project that builds and runs as it stands.

Each language gets the SDK (a copy), the source of a small working function, a build script with
the size flags, a sample input and a README with the commands to build, run locally and deploy.
The templates and SDKs are package data (``templates/``; ``sdk/`` holds links to the one copy in
``guest_examples/``, stored as files in the wheel), read with `importlib.resources`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["LANGUAGES", "ScaffoldError", "scaffold"]

#: A function name the gateway accepts that is also a package/crate name once `-` becomes `_`.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


class ScaffoldError(ValueError):
    """A one-line reason the project was not written."""


@dataclass(frozen=True)
class Language:
    title: str
    #: SDK file in ``sdk/`` → where the project keeps it.
    sdk: tuple[str, str]
    toolchain: str
    size: str
    notes: str


LANGUAGES: dict[str, Language] = {
    "c": Language(
        "C", ("wasmhost.h", "wasmhost.h"),
        "zig cc (zig 0.17.1, or `pip install ziglang==0.17.1`); freestanding, no libc.",
        "about 7 KB",
        "- Export `handle` with `WASMHOST_EXPORT(\"handle\")`; without it the module exports nothing to run.\n"
        "- No libc (`-nostdlib`): no malloc or printf. Use the SDK's string builder (`wasmhost_sb_*`) and JSON "
        "reader; `WASMHOST_ASSERT(cond)` / `WASMHOST_PANIC(\"why\")` log the reason and location, then trap.",
    ),
    "zig": Language(
        "Zig", ("wasmhost.zig", "wasmhost.zig"),
        "Zig 0.17.1 (or `pip install ziglang==0.17.1`): Zig's std changes between releases.",
        "about 55 KB",
        "- `build-exe -fno-entry --export=handle`, not `build-lib` (that makes an Emscripten-style library "
        "the host refuses).\n"
        "- `pub const panic = wasmhost.panic;` logs a panic's message before the trap.",
    ),
    "rust": Language(
        "Rust", ("wasmhost.rs", "src/wasmhost.rs"),
        "Rust with the wasm32-unknown-unknown target: `rustup target add wasm32-unknown-unknown` (then "
        "`cargo build --release --target wasm32-unknown-unknown` works too), or Debian's `apt-get install rustc "
        "libstd-rust-dev-wasm32 lld-14`. No crates are needed.",
        "about 70 KB",
        "- `Cargo.toml` says edition 2021: under 2024 the SDK's `extern \"C\"` blocks fail with \"extern blocks "
        "must be unsafe\". Its release profile (opt-level s, LTO, panic=abort) is what keeps the module small: "
        "without it a release build is megabytes.\n"
        "- wasm32-unknown-unknown has no clock, files or environment: `std::time::SystemTime::now()` panics.\n"
        "- A panic is logged with its message and location (the SDK installs a panic hook), then traps.\n"
        "- `#[no_mangle] pub extern \"C\" fn handle() -> i32` is the export; a crate without it exports nothing.",
    ),
    "assemblyscript": Language(
        "AssemblyScript", ("wasmhost.ts", "assembly/wasmhost.ts"),
        "node and npm; `npm install` fetches AssemblyScript 0.28.20 (build.sh does it).",
        "about 13 KB",
        "- Strings are UTF-16 inside AssemblyScript: the SDK converts; never pass `changetype<usize>(aString)` "
        "to the host.\n"
        "- `export function handle(): i32` in `assembly/index.ts` is the export.\n"
        "- build.sh routes `abort` to the SDK's, which logs the message and location before trapping.",
    ),
    "python": Language(
        "Python", ("guest.wit", "wit/guest.wit"),
        "`pip install componentize-py==0.25.1`.",
        "about 19 MB: a component carrying a Python interpreter",
        "- A component of the WIT world `wasmhost:guest` (`wit/guest.wit`): `class WitWorld` with `handle`.\n"
        "- Its first load compiles for several seconds; the host caches the result. The gateway's module limit "
        "(32 MiB by default) fits it.\n"
        "- WASI is stubbed: `host.log`, not `print`; `app.py` logs an uncaught exception's traceback.",
    ),
    "javascript": Language(
        "JavaScript", ("guest.wit", "wit/guest.wit"),
        "node and npm; `npm install` fetches componentize-qjs 0.4.5 (QuickJS; build.sh does it).",
        "about 1.1 MB: a component carrying QuickJS",
        "- A component of the WIT world `wasmhost:guest` (`wit/guest.wit`): `export function handle()`.\n"
        "- No `console`: use `log`; `app.js` logs an uncaught error's stack.",
    ),
}


def _identifier(name: str) -> str:
    return name.replace("-", "_").lower()


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"__{key}__", value)
    return text


def _walk(node: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        rel = f"{prefix}{child.name}"
        if child.name == "__pycache__":  # pip byte-compiles the Python template where it is installed
            continue
        if child.is_dir():
            found.extend(_walk(child, rel + "/"))
        elif child.is_file():
            found.append((rel, child))
    return found


def scaffold(language: str, name: str, directory: Path) -> list[Path]:
    """Write the project for `name` in `language` into `directory` (new or empty); return the files written."""
    lang = LANGUAGES.get(language)
    if lang is None:
        raise ScaffoldError(f"unknown language {language!r} (choose from: {', '.join(LANGUAGES)})")
    if not NAME_PATTERN.match(name):
        raise ScaffoldError(f"bad function name {name!r}: start with a letter, then letters, digits, '-' or '_' "
                            "(at most 63 characters)")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ScaffoldError(f"{directory} already exists and is not empty")
    ident = _identifier(name)
    values = {"NAME": name, "IDENT": ident, "LANG": language, "LANGUAGE": lang.title, "TOOLCHAIN": lang.toolchain,
              "SIZE": lang.size, "NOTES": lang.notes, "SDK": lang.sdk[1]}
    root = files(__name__)
    templates = root / "templates"
    sources: list[tuple[str, str]] = [(rel, item.read_text("utf-8")) for rel, item in _walk(templates / language)]
    sources += [("README.md", (templates / "README.md").read_text("utf-8")),
                ("input.json", (templates / "input.json").read_text("utf-8")),
                (".gitignore", (templates / "gitignore").read_text("utf-8"))]
    written = [directory / lang.sdk[1]]
    directory.mkdir(parents=True, exist_ok=True)
    written[0].parent.mkdir(parents=True, exist_ok=True)
    written[0].write_text((root / "sdk" / lang.sdk[0]).read_text("utf-8"), "utf-8")
    for rel, text in sources:
        path = directory / _render(rel, values)
        path.parent.mkdir(parents=True, exist_ok=True)
        # README values are inserted once; sources get only the names (their own text may contain "__").
        path.write_text(_render(text, values if rel == "README.md" else {"NAME": name, "IDENT": ident}), "utf-8")
        if path.name == "build.sh":
            path.chmod(0o755)
        written.append(path)
    return sorted(written)
