"""Guests that try to stall other tenants, each within the limits the platform accepts (issue 10).

Used by ``tests/isolation/test_runtime_attacks.py`` and by the gateway benchmark: deploy an attack in
one namespace with `Attack.limits`, keep `CONCURRENCY` invocations of it running, and measure a
second namespace's invocations of `VICTIM` (or `VICTIM_COMPONENT`) and ``GET /healthz``::

    from bench.attacks import ATTACKS, VICTIM
    for attack in ATTACKS.values():
        wasm = attack.wasm()               # bytes: a core module or a component
        limits = attack.limits             # query parameters for PUT /v1/functions/{name}
        ...

Every attack runs until its fuel or its deadline ends it; invoke it again to keep the pressure on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import wasmtime

__all__ = ["ATTACKS", "CONCURRENCY", "VICTIM", "VICTIM_COMPONENT", "Attack"]

#: Invocations of an attack kept running at once (the default per-namespace cap).
CONCURRENCY = 8


@dataclass(frozen=True)
class Attack:
    name: str
    #: What it does and which step it hopes cannot be interrupted.
    about: str
    #: WAT text of a core module or a component.
    wat: str
    #: The function's limits (largest accepted values where they help the attack).
    limits: dict[str, int] = field(default_factory=dict)

    def wasm(self) -> bytes:
        return _wat2wasm(self.wat)


@cache
def _wat2wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


_MAX_TIME = {"timeout_ms": 60_000, "fuel": 1_000_000_000}

ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in (
        Attack(
            "random_get",
            "WASI random_get of 64 MiB in a loop (one call costs almost no fuel)",
            """(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1024)
  (func (export "handle") (result i32)
    (loop $l (drop (call $random_get (i32.const 0) (i32.const 67108864))) (br $l))
    (i32.const 0)))""",
            {**_MAX_TIME, "memory_mb": 256},
        ),
        Attack(
            "memory_fill",
            "memory.fill of 256 MiB in a loop (one instruction, cannot be interrupted)",
            """(module
  (memory (export "memory") 4096)
  (func (export "handle") (result i32)
    (loop $l (memory.fill (i32.const 0) (i32.const 7) (i32.const 268435456)) (br $l))
    (i32.const 0)))""",
            {**_MAX_TIME, "memory_mb": 256},
        ),
        Attack(
            "log_flood",
            "log of 64 KiB lines, 10,000 times (the most lines and the longest lines allowed)",
            """(module
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (local $i i32)
    (loop $l
      (drop (call $log (i32.const 1) (i32.const 0) (i32.const 65536)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
    (i32.const 0)))""",
            {**_MAX_TIME, "max_log_lines": 10_000, "max_log_line_bytes": 65_536},
        ),
        Attack(
            "spin",
            "(loop (br $l)) until the fuel runs out",
            """(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (loop $l (br $l)) (i32.const 0)))""",
            dict(_MAX_TIME),
        ),
        Attack(
            "component_spin",
            "a component whose handle loops until the fuel runs out",
            """(component
  (core module $m (func (export "handle") (result i32) (loop $l (br $l)) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func (export "handle") (result s32) (canon lift (core func $i "handle"))))""",
            dict(_MAX_TIME),
        ),
    )
}

#: The other tenant's function: returns at once.
VICTIM = Attack(
    "victim",
    "returns 0",
    """(module (memory (export "memory") 1) (func (export "handle") (result i32) (i32.const 0)))""",
)

#: The other tenant's component: returns at once.
VICTIM_COMPONENT = Attack(
    "victim_component",
    "a component that returns 0",
    """(component
  (core module $m (func (export "handle") (result i32) (i32.const 0)))
  (core instance $i (instantiate $m))
  (func (export "handle") (result s32) (canon lift (core func $i "handle"))))""",
)
