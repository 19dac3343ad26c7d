"""Whether a core module may contain bulk memory or table instructions (one instruction, no yield).

``memory.fill``, ``memory.copy``, ``memory.init``, ``table.fill``, ``table.copy``, ``table.init`` and
``table.grow`` do work proportional to an operand in a single instruction that neither fuel slices
nor epoch ticks can interrupt: a ``memory.fill`` of a fresh 256 MiB memory held its thread for about
100 ms. Guests that may execute them with a large memory run on guest threads instead of the loop
(see `runtime`).

The check is a byte search in the code section for the opcode prefix ``0xFC`` followed by one of
those sub-opcodes, not a decode of the instruction stream: the same two bytes inside an immediate
make a false positive, which only costs the guest a thread hand-off, never a stall. Compilers that
emit no bulk instructions (e.g. C and Rust for wasm32 without the bulk-memory feature) produce code
sections without them in practice.
"""

from __future__ import annotations

import re

__all__ = ["may_use_bulk_ops"]

_MAGIC = b"\0asm\x01\x00\x00\x00"
_CODE_SECTION = 10
# 0xFC prefix, then memory.init (8), memory.copy (10), memory.fill (11), table.init (12),
# table.copy (14), table.grow (15), table.fill (17): one-byte LEB128 sub-opcodes.
_BULK = re.compile(rb"\xfc[\x08\x0a\x0b\x0c\x0e\x0f\x11]")


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("truncated LEB128")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def may_use_bulk_ops(wasm: bytes) -> bool:
    """False only if ``wasm`` is a core module whose code section has no bulk memory/table opcode."""
    if not wasm.startswith(_MAGIC):
        return True
    pos = len(_MAGIC)
    try:
        while pos < len(wasm):
            section = wasm[pos]
            size, pos = _uleb(wasm, pos + 1)
            if section == _CODE_SECTION:
                return _BULK.search(wasm, pos, pos + size) is not None
            pos += size
    except ValueError:
        return True
    return False
