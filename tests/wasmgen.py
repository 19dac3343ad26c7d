"""Core modules built byte by byte, for tests that need many functions without a slow WAT round trip."""

from __future__ import annotations


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _uleb(len(payload)) + payload


def _name(text: str) -> bytes:
    raw = text.encode()
    return _uleb(len(raw)) + raw


def many_functions(count: int, *, body_ops: int = 0, export_handle: bool = True, salt: int = 0) -> bytes:
    """A module with ``count`` functions ``() -> i32`` (plus handle) and an exported memory.

    Each function pushes ``body_ops`` extra constants and adds them (more code, slower to compile).
    ``salt`` changes the bytes (and so the hash) without changing the shape.
    """
    types = _section(1, _uleb(1) + b"\x60\x00\x01\x7f")
    total = count + (1 if export_handle else 0)
    funcs = _section(3, _uleb(total) + b"\x00" * total)
    memory = _section(5, _uleb(1) + b"\x00\x01")
    exports = [_name("memory") + b"\x02\x00"]
    if export_handle:
        exports.append(_name("handle") + b"\x00" + _uleb(count))
    else:
        exports.append(_name("main") + b"\x00\x00")
    export = _section(7, _uleb(len(exports)) + b"".join(exports))
    bodies = []
    for i in range(total):
        code = b"\x41" + _sleb(i + salt)
        for j in range(body_ops):
            code += b"\x41" + _sleb(j * 7 + i) + b"\x6a"  # i32.const j; i32.add
        body = b"\x00" + code + b"\x0b"
        bodies.append(_uleb(len(body)) + body)
    code_section = _section(10, _uleb(total) + b"".join(bodies))
    return b"\0asm\x01\0\0\0" + types + funcs + memory + export + code_section


def _sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)
