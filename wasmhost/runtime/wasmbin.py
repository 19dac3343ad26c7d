"""A small reader of the WebAssembly binary format: what a core module imports, defines and exports.

Enough to check a module's contract with the host before anything compiles it (compiling is the
expensive, unbounded step): the imports with their kinds and function signatures, the number of
functions, tables, memories and globals, the memories' limits, and the exports. Function bodies,
data and custom sections are skipped by their declared sizes, so reading costs a pass over section
headers plus the import, type, function, memory and export sections. Anything malformed raises
`BinaryError`; a module this reader accepts still goes through wasmtime's full validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BinaryError", "Export", "Import", "MemoryLimits", "ModuleInfo", "TooMany", "read_module"]

_MAGIC = b"\0asm"
_VERSION_1 = b"\x01\x00\x00\x00"

_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
KIND_NAMES = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}


class BinaryError(ValueError):
    """The bytes are not a well-formed core module (the message says where)."""


class TooMany(BinaryError):
    """A section declares more entries than the limit; reading stopped there."""


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    min_pages: int
    max_pages: int | None
    shared: bool
    is_64: bool


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    name: str
    kind: str
    #: For a function import, its signature as ``(i32, i32) -> (i32)``.
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class Export:
    name: str
    kind: str
    #: For a function export, its signature; for a memory export, its limits.
    signature: str | None = None
    memory: MemoryLimits | None = None


@dataclass(slots=True)
class ModuleInfo:
    imports: list[Import] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    #: Signature of every function in the function index space (imports first).
    function_signatures: list[str] = field(default_factory=list)
    tables: int = 0
    memories: list[MemoryLimits] = field(default_factory=list)
    globals: int = 0

    @property
    def functions(self) -> int:
        return len(self.function_signatures)

    def export(self, name: str) -> Export | None:
        return next((e for e in self.exports if e.name == name), None)


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise BinaryError(f"unexpected end at byte {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits + 7:
                raise BinaryError(f"integer too long at byte {self.pos}")
        if result >> bits:
            raise BinaryError(f"integer out of range at byte {self.pos}")
        return result

    def sleb33(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= 40:
                raise BinaryError(f"integer too long at byte {self.pos}")
        if b & 0x40:
            result -= 1 << shift
        return result

    def bytes(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise BinaryError(f"unexpected end at byte {self.pos}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def name(self) -> str:
        raw = self.bytes(self.uleb())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BinaryError(f"a name before byte {self.pos} is not UTF-8") from None

    def valtype(self) -> str:
        b = self.byte()
        if b in _VALTYPES:
            return _VALTYPES[b]
        if b in (0x63, 0x64):  # (ref null ht) / (ref ht) of the function-references proposal
            heap = self.sleb33()
            return f"ref{' null' if b == 0x63 else ''} {heap}"
        raise BinaryError(f"unsupported value type 0x{b:02x} at byte {self.pos - 1}")

    def limits(self, memory: bool) -> MemoryLimits:
        flags = self.byte()
        if flags & ~0x0F or (not memory and flags & ~0x05):
            raise BinaryError(f"bad limits flags 0x{flags:02x} at byte {self.pos - 1}")
        is_64 = bool(flags & 0x04)
        bits = 64 if is_64 else 32
        minimum = self.uleb(bits)
        maximum = self.uleb(bits) if flags & 0x01 else None
        if flags & 0x08:  # custom page size: log2 of the page size
            self.uleb()
        return MemoryLimits(minimum, maximum, bool(flags & 0x02), is_64)

    def done(self, what: str) -> None:
        if self.pos != self.end:
            raise BinaryError(f"the {what} section has {self.end - self.pos} bytes left over")


def _signature(params: list[str], results: list[str]) -> str:
    return f"({', '.join(params)}) -> ({', '.join(results)})"


def _types(r: _Reader, count: int) -> list[str | None]:
    """Function signatures by type index (None for a non-function type)."""
    out: list[str | None] = []
    for _ in range(count):
        form = r.byte()
        if form != 0x60:
            raise BinaryError(f"type form 0x{form:02x} at byte {r.pos - 1} is not supported (only function types)")
        params = [r.valtype() for _ in range(r.uleb())]
        results = [r.valtype() for _ in range(r.uleb())]
        out.append(_signature(params, results))
    return out


def _signature_of(types: list[str | None], index: int, where: int) -> str:
    if index >= len(types) or types[index] is None:
        raise BinaryError(f"type index {index} at byte {where} is out of range")
    sig = types[index]
    assert sig is not None
    return sig


def _count(s: _Reader, what: str, already: int, limit: int | None) -> int:
    n = s.uleb()
    if limit is not None and already + n > limit:
        raise TooMany(
            f"the module has {already + n:,} {what}; the limit is {limit:,} per module (WASMHOST_MAX_MODULE_FUNCTIONS)"
        )
    return n


def read_module(data: bytes | memoryview, max_items: int | None = None) -> ModuleInfo:
    """Read a core module's structure; raise `BinaryError` if it is not well formed.

    ``max_items`` bounds the functions, types, imports and exports (each costs Python work here and
    compile work later): a module over it raises `TooMany` before its entries are read.
    """
    if bytes(data[:4]) != _MAGIC:
        raise BinaryError("no \\0asm header")
    if bytes(data[4:8]) != _VERSION_1:
        raise BinaryError("not a version 1 core module")
    info = ModuleInfo()
    types: list[str | None] = []
    r = _Reader(data, 8)
    last_id = 0.0
    exports: list[tuple[str, int, int]] = []
    while r.pos < r.end:
        section_id = r.byte()
        size = r.uleb()
        start = r.pos
        if size > r.end - start:
            raise BinaryError(f"section {section_id} at byte {start} runs past the end of the module")
        s = _Reader(data, start, start + size)
        r.pos = start + size
        if section_id == 0:
            continue
        # Non-custom sections appear at most once, in order (data count, 12, sits before code, 10).
        order = {12: 9.5, 13: 5.5}.get(section_id, section_id)
        if order <= last_id:
            raise BinaryError(f"section {section_id} at byte {start} is out of order or repeated")
        last_id = order
        if section_id == 1:
            types = _types(s, _count(s, "types", 0, max_items))
            s.done("type")
        elif section_id == 2:
            _imports(s, info, types, _count(s, "imports", 0, max_items))
            s.done("import")
        elif section_id == 3:
            for _ in range(_count(s, "functions", info.functions, max_items)):
                where = s.pos
                info.function_signatures.append(_signature_of(types, s.uleb(), where))
            s.done("function")
        elif section_id == 4:
            info.tables += s.uleb()
        elif section_id == 5:
            info.memories.extend(s.limits(memory=True) for _ in range(s.uleb()))
            s.done("memory")
        elif section_id == 6:
            info.globals += s.uleb()
        elif section_id == 7:
            for _ in range(_count(s, "exports", 0, max_items)):
                name = s.name()
                kind = s.byte()
                if kind not in KIND_NAMES:
                    raise BinaryError(f"export {name!r} has unknown kind 0x{kind:02x}")
                exports.append((name, kind, s.uleb()))
            s.done("export")
        elif section_id > 13:
            raise BinaryError(f"unknown section id {section_id} at byte {start - 1}")
    for name, kind, index in exports:
        sig = mem = None
        if kind == 0:
            if index >= info.functions:
                raise BinaryError(f"export {name!r} names function {index}, which does not exist")
            sig = info.function_signatures[index]
        elif kind == 2:
            if index >= len(info.memories):
                raise BinaryError(f"export {name!r} names memory {index}, which does not exist")
            mem = info.memories[index]
        info.exports.append(Export(name, KIND_NAMES[kind], sig, mem))
    return info


def _imports(s: _Reader, info: ModuleInfo, types: list[str | None], count: int) -> None:
    for _ in range(count):
        module = s.name()
        name = s.name()
        kind = s.byte()
        signature = None
        if kind == 0:
            where = s.pos
            signature = _signature_of(types, s.uleb(), where)
            info.function_signatures.append(signature)
        elif kind == 1:
            s.valtype()
            s.limits(memory=False)
            info.tables += 1
        elif kind == 2:
            info.memories.append(s.limits(memory=True))
        elif kind == 3:
            s.valtype()
            s.byte()
            info.globals += 1
        elif kind == 4:
            s.byte()
            s.uleb()
        else:
            raise BinaryError(f"import {module}.{name} has unknown kind 0x{kind:02x}")
        info.imports.append(Import(module, name, KIND_NAMES[kind], signature))
