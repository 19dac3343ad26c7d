"""Guest modules for the gateway tests (WAT; the runtime accepts text)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WELCOME_WASM = ROOT / "guest_examples" / "welcome" / "welcome.wasm"

#: Spins forever: must end as out_of_fuel or timeout.
LOOP = """(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (loop $forever (br $forever)) (i32.const 0)))"""

#: Copies its input to its output.
ECHO = """(module
  (import "wasmhost" "input_len" (func $len (result i32)))
  (import "wasmhost" "input_read" (func $read (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (local $n i32)
    (local.set $n (call $read (i32.const 0) (i32.const 65536)))
    (drop (call $write (i32.const 0) (local.get $n)))
    (i32.const 0)))"""

#: Traps at once.
TRAP = """(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32) unreachable))"""

#: Imports something the ABI does not have: refused at deploy.
BAD_IMPORT = """(module
  (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32) (i32.const 0)))"""

#: Logs its input five times (level info) and outputs "logged".
LOGGER = """(module
  (import "wasmhost" "input_read" (func $read (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $write (param i32 i32) (result i32)))
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "logged")
  (func (export "handle") (result i32) (local $n i32) (local $i i32)
    (local.set $n (call $read (i32.const 1024) (i32.const 65536)))
    (loop $again
      (drop (call $log (i32.const 1) (i32.const 1024) (local.get $n)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 5))))
    (drop (call $write (i32.const 0) (i32.const 6)))
    (i32.const 0)))"""
