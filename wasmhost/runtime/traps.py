"""Trap messages a tenant can act on: the trap in words, where it happened, and the guest's own frames.

wasmtime's text is written for whoever runs the engine: it suggests server environment variables
(``WASMTIME_BACKTRACE_DETAILS``) and prints raw backtrace lines. A tenant gets this instead, built
from the trap's structured frames; names are demangled (Rust) and the language runtime's own panic
machinery is left out, so the first frame shown is the tenant's code (or the std function it called,
such as ``core::result::unwrap_failed``).
"""

from __future__ import annotations

import re

from wasmtime import Trap, TrapCode

__all__ = ["clean_text", "describe_trap", "describe_trap_text"]

#: Frames shown at most (innermost first); deep recursion would otherwise repeat one name for pages.
MAX_FRAMES = 8

_WHAT = {
    TrapCode.UNREACHABLE: "unreachable code was reached (a Rust panic, C abort() or __builtin_trap(), Zig "
                          "unreachable or panic, AssemblyScript abort or a failed assert)",
    TrapCode.MEMORY_OUT_OF_BOUNDS: "out-of-bounds memory access (a bad pointer or length)",
    TrapCode.HEAP_MISALIGNED: "misaligned atomic memory access",
    TrapCode.STACK_OVERFLOW: "call stack exhausted (unbounded recursion?)",
    TrapCode.INTEGER_DIVISION_BY_ZERO: "integer division by zero",
    TrapCode.INTEGER_OVERFLOW: "integer overflow (INT_MIN / -1)",
    TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid float to integer conversion (NaN or out of range)",
    TrapCode.TABLE_OUT_OF_BOUNDS: "table index out of bounds",
    TrapCode.INDIRECT_CALL_TO_NULL: "call through a null function pointer",
    TrapCode.BAD_SIGNATURE: "call through a function pointer of the wrong type",
}

#: Frames of a language runtime's panic path, not the tenant's code.
_RUNTIME_FRAME = re.compile(
    r"^(rust_panic|rust_begin_unwind|__rust_|std::panicking::|std::sys_common::backtrace::|core::panicking::"
    r"|std::rt::|abort$|~lib/builtins/abort)"
)
_HASH = re.compile(r"^h[0-9a-f]{16}$")
_ESCAPES = {"$LT$": "<", "$GT$": ">", "$LP$": "(", "$RP$": ")", "$C$": ",", "$RF$": "&", "$BP$": "*",
            "$SP$": "@", "$u20$": " ", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u7b$": "{", "$u7d$": "}",
            "$u7e$": "~", "$u3b$": ";", "$u2b$": "+", "$u22$": '"'}


def _demangle(name: str) -> str:
    """Rust's legacy mangling (``_ZN…E``, what rustc 1.63 emits) to a path without its hash."""
    name = re.sub(r"\.\d+$", "", name)  # LTO's suffix for local copies
    if not (name.startswith("_ZN") and name.endswith("E")):
        return name
    body, parts, i = name[3:-1], [], 0
    while i < len(body) and body[i].isdigit():
        j = i
        while j < len(body) and body[j].isdigit():
            j += 1
        n = int(body[i:j])
        part = body[j:j + n]
        parts.append(part[1:] if part.startswith("_$") else part)  # `_` guards a leading escape
        i = j + n
    if i != len(body) or not parts:
        return name
    if _HASH.match(parts[-1]):
        parts.pop()
    text = "::".join(parts)
    for escape, char in _ESCAPES.items():
        text = text.replace(escape, char)
    return text.replace("..", "::")


def _collapse(names: list[str]) -> list[str]:
    """Leave out the runtime's panic path; consecutive repeats (recursion) become one entry."""
    runs: list[tuple[str, int]] = []
    for name in names:
        if _RUNTIME_FRAME.match(name):
            continue
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + 1)
        else:
            runs.append((name, 1))
    return [name if count == 1 else f"{name} ×{count}" for name, count in runs]


def _frames(trap: Trap) -> list[str]:
    try:
        frames = trap.frames
    except Exception:  # a trap without a backtrace
        return []
    return _collapse([_demangle(f.func_name) if f.func_name else f"func[{f.func_index}]" for f in frames])


def _format(name: str, where: str, what: str, frames: list[str]) -> str:
    text = f"wasm trap {name} {where}: {what}"
    if frames:
        shown = frames[:MAX_FRAMES]
        more = f" ← … ({len(frames) - MAX_FRAMES} more)" if len(frames) > MAX_FRAMES else ""
        text += "; guest frames: " + " ← ".join(shown) + more
        if all(f.startswith("func[") for f in shown):
            text += " (the module has no name section: build without stripping to see function names)"
    return text


def describe_trap(trap: Trap, where: str) -> str:
    """``wasm trap NAME in handle: what it means; guest frames: inner ← … ← handle``."""
    code = trap.trap_code
    what = _WHAT.get(code) if code is not None else None
    return _format(code.name if code is not None else "UNKNOWN", where, what or clean_text(trap), _frames(trap))


#: wasmtime's trap texts, for traps that arrive as text (components): the same names and words.
_TEXT_CODES = {
    "wasm `unreachable` instruction executed": TrapCode.UNREACHABLE,
    "out of bounds memory access": TrapCode.MEMORY_OUT_OF_BOUNDS,
    "misaligned memory access": TrapCode.HEAP_MISALIGNED,
    "call stack exhausted": TrapCode.STACK_OVERFLOW,
    "integer divide by zero": TrapCode.INTEGER_DIVISION_BY_ZERO,
    "integer overflow": TrapCode.INTEGER_OVERFLOW,
    "invalid conversion to integer": TrapCode.BAD_CONVERSION_TO_INTEGER,
    "undefined element": TrapCode.TABLE_OUT_OF_BOUNDS,
    "uninitialized element": TrapCode.INDIRECT_CALL_TO_NULL,
    "indirect call type mismatch": TrapCode.BAD_SIGNATURE,
}
_TEXT_FRAME = re.compile(r"^\s*\d+:\s+0x[0-9a-f]+ - (?:[^!\s]*!)?(.+?)\s*$")
_UNNAMED = re.compile(r"^<wasm function (\d+)>$")


def describe_trap_text(text: str, where: str) -> str | None:
    """`describe_trap` for a trap wasmtime reported only as text (a component's), or None if it is not one."""
    match = re.search(r"wasm trap: (.+)", text)
    if match is None:
        return None
    reason = match.group(1).strip()
    code = next((c for phrase, c in _TEXT_CODES.items() if phrase in reason), None)
    if code is None:
        return None
    names = []
    for line in text.splitlines():
        frame = _TEXT_FRAME.match(line)
        if frame:
            unnamed = _UNNAMED.match(frame.group(1))
            names.append(f"func[{unnamed.group(1)}]" if unnamed else _demangle(frame.group(1)))
    what = _WHAT[code]
    if code is TrapCode.UNREACHABLE:
        what = ("unreachable code was reached: in a component, usually an uncaught exception (Python, JavaScript) "
                "or a panic; catch it in handle and log it")
    frames = _collapse(names)
    if all(f.startswith("func[") for f in frames):  # an interpreter's internals say nothing about your code
        frames = []
    return _format(code.name, where, what, frames)


def clean_text(exc: BaseException) -> str:
    """wasmtime's message without backtrace lines, notes about server environment variables or chain labels."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    keep = [
        ln for ln in lines
        if ln and ln != "Caused by:" and not re.match(r"^\d+:\s+0x", ln) and "WASMTIME_BACKTRACE_DETAILS" not in ln
        and not ln.startswith("error while executing at wasm backtrace")
    ]
    return ": ".join(keep[:3])[:500] or type(exc).__name__
