"""Runtime benchmark: wasmhost invocations and host calls against raw wasmtime-py (and Extism).

    python -m bench.runtime [--quick]

Measures, in one run and on the same machine:

a. floor invoke — raw wasmtime-py, the way its docs show it: fresh Store (fuel + epoch deadline
   set, same engine settings as ours), ``linker.instantiate``, call ``handle``, which makes one
   host call that reads two strings (``caller.get("memory")`` + bounds check + ``read``).
b. wasmhost invoke — ``await runtime.invoke`` of the welcome guest (C build; cached module, fresh
   Store, every limit on): reads JSON input, one ``push_send_to_user`` + ``push_wait`` delivered by
   the real ``Manager`` + outbox provider + SQLite store to a user with one device, writes output.
   Also shown: the same with an in-memory sender (the runtime's own cost) and an empty guest.
c. host-call rate — a guest loop of ``push_send_to_user`` to a user with no devices (the real
   Manager delivering concurrently on the event loop) against the floor's host function in a loop;
   per-call time is the guest time difference between N and 0 calls, divided by N.
d. Extism (if ``pip install extism`` worked): fresh ``Plugin(compiled)`` + one ``call`` of an
   equivalent guest (copies two strings into Extism memory, one host call reading both).
e. fan-out: ``Manager.send_to_user`` to a user with 20 outbox devices (20 rows, one commit).

Prints a table, then as the last line one JSON object with the headline numbers and ratios
(``invoke_*``/``send_call_*`` with the real Manager when it exists; ``*_runtime_*`` with the
in-memory sender, i.e. the runtime's own cost).
Goals: ``send_call_ratio <= 2``, ``invoke_ratio <= 4``, ``invoke_vs_extism < 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import wasmtime

from wasmhost.push.accepted import Accepted
from wasmhost.push.message import PushMessage
from wasmhost.push.report import DeviceResult, SendReport
from wasmhost.runtime import Limits, Runtime

ROOT = Path(__file__).resolve().parents[1]
WELCOME = (ROOT / "guest_examples" / "welcome" / "welcome.wasm").read_bytes()
WELCOME_INPUT = b'{"user": "alice", "name": "Alice"}'

FLOOR_WAT = r"""(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alice")
  (data (i32.const 64) "{\"title\":\"Welcome, Alice!\"}")
  (func (export "handle") (result i32)
    (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 27)))
  (func (export "spin") (param $n i32) (result i32) (local $acc i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $acc (i32.add (local.get $acc)
                               (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 27))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l)))
    (local.get $acc)))"""

# push_send_to_user N times (N = the input, i32 LE) to "nobody"; returns 1 if any call was refused.
SEND_LOOP_WAT = r"""(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "input_read" (func $input_read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "nobody")
  (data (i32.const 64) "{\"title\":\"Welcome, Alice!\"}")
  (func (export "handle") (result i32) (local $n i32)
    (drop (call $input_read (i32.const 0) (i32.const 4)))
    (local.set $n (i32.load (i32.const 0)))
    (block $done (loop $l
      (br_if $done (i32.eqz (local.get $n)))
      (if (i32.le_s (call $send (i32.const 16) (i32.const 6) (i32.const 64) (i32.const 27)) (i32.const 0))
        (then (return (i32.const 1))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l)))
    (i32.const 0)))"""

EMPTY_WAT = '(module (memory (export "memory") 1) (func (export "handle") (result i32) (i32.const 0)))'

EXTISM_WAT = r"""(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/user" "push_send_to_user" (func $push (param i64 i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alice")
  (data (i32.const 64) "{\"title\":\"Welcome, Alice!\"}")
  (func $copy (param $src i32) (param $len i32) (result i64) (local $dst i64) (local $i i32)
    (local.set $dst (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $dst) (i64.extend_i32_u (local.get $i)))
                      (i32.load8_u (i32.add (local.get $src) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (local.get $dst))
  (func (export "handle") (result i32)
    (drop (call $push (call $copy (i32.const 16) (i32.const 5)) (call $copy (i32.const 64) (i32.const 27))))
    (i32.const 0)))"""


class MemorySender:
    """Answers at once with one successful device (isolates the runtime from push and the store)."""

    async def accept(
        self, namespace: str, user_id: str, message: PushMessage, *, deadline: float | None = None
    ) -> Accepted:
        return Accepted(SendReport([DeviceResult("phone", "outbox", True, 200, attempts=1)]))


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def ameasure(fn: Callable[[], Awaitable[Any]], iterations: int, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iterations):
            await fn()
        out.append((time.perf_counter() - start) / iterations)
    return median_us(out)


# -- (a) the floor ---------------------------------------------------------------------------------


class Floor:
    """Raw wasmtime-py as documented: stock host function, stock instantiate and call."""

    def __init__(self) -> None:
        cfg = wasmtime.Config()
        cfg.consume_fuel = True
        cfg.epoch_interruption = True
        self.engine = wasmtime.Engine(cfg)
        self.module = wasmtime.Module(self.engine, FLOOR_WAT)
        self.linker = wasmtime.Linker(self.engine)
        i32 = wasmtime.ValType.i32()
        self.linker.define_func(
            "wasmhost", "push_send_to_user", wasmtime.FuncType([i32] * 4, [i32]), self._host, access_caller=True
        )
        self.calls = 0

    def _host(self, caller: wasmtime.Caller, up: int, ul: int, mp: int, ml: int) -> int:
        mem = caller.get("memory")
        assert isinstance(mem, wasmtime.Memory)
        size = mem.data_len(caller)
        if up < 0 or ul < 0 or up + ul > size or mp < 0 or ml < 0 or mp + ml > size:
            return -2
        user = mem.read(caller, up, up + ul).decode()
        msg = mem.read(caller, mp, mp + ml).decode()
        self.calls += bool(user and msg)
        return 1

    def _store(self) -> wasmtime.Store:
        store = wasmtime.Store(self.engine)
        store.set_fuel(100_000_000)
        store.set_epoch_deadline(1_000_000)
        return store

    def invoke(self) -> None:
        store = self._store()
        instance = self.linker.instantiate(store, self.module)
        handle = instance.exports(store)["handle"]
        assert isinstance(handle, wasmtime.Func)
        assert handle(store) == 1

    def call_us(self, n: int, rounds: int) -> float:
        store = self._store()
        instance = self.linker.instantiate(store, self.module)
        spin = instance.exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)
        out = []
        for _ in range(rounds):
            start = time.perf_counter()
            assert spin(store, n) == n
            out.append((time.perf_counter() - start) / n)
        return median_us(out)


# -- (b, c) wasmhost -------------------------------------------------------------------------------


async def real_manager(tmp: Path) -> tuple[Any, Any, str]:
    """The real Manager + outbox provider + SQLite store, or (None, None, reason)."""
    try:
        from wasmhost.providers import ProviderPool, default_specs
        from wasmhost.push import Defaults, Manager
        from wasmhost.store import KeyRing, SQLiteStore
    except ImportError as exc:  # pragma: no cover - partial trees
        return None, None, f"real Manager unavailable ({exc})"
    store = await SQLiteStore(tmp / "bench.db", KeyRing({1: os.urandom(32)})).open()
    await store.create_namespace("bench")
    await store.register_device("bench", "alice", "phone", "outbox", "tok-phone")
    manager = Manager(store, ProviderPool(default_specs(store)), Defaults(credentials={"outbox": {}}))
    return manager, store, "Manager + outbox + SQLite"


async def fanout_us(manager: Any, store: Any, iterations: int, rounds: int) -> float:
    """µs per send to a user with 20 outbox devices (the deliveries' rows are one transaction)."""
    for i in range(20):
        await store.register_device("bench", "fan", f"d{i}", "outbox", f"tok-fan-{i}")
    message = PushMessage(title="hi")

    async def once() -> None:
        report = await manager.send_to_user("bench", "fan", message)
        assert report.devices_succeeded == 20, report.to_dict()

    await once()
    return await ameasure(once, max(1, iterations // 10), rounds)


async def send_call_us(runtime: Runtime, n: int, rounds: int) -> tuple[float, float]:
    """(guest-visible µs per push_send_to_user, end-to-end µs per send incl. delivery)."""
    module = runtime.compile(SEND_LOOP_WAT, namespace="acme")
    limits = Limits(max_sends=Limits.MAXIMA["max_sends"], timeout_ms=60_000)
    guest, total = [], []
    for _ in range(rounds):
        empty = await runtime.invoke("bench", module, struct.pack("<i", 0), limits)
        start = time.perf_counter()
        full = await runtime.invoke("bench", module, struct.pack("<i", n), limits)
        elapsed = time.perf_counter() - start
        assert full.ok and len(full.sends) == n, full.to_dict()["error"]
        assert all(s["error"] is None for s in full.sends), full.sends[0]
        guest.append((full.guest_ms - empty.guest_ms) / 1000 / n)
        total.append(elapsed / n)
    return median_us(guest), median_us(total)


# -- (d) Extism ------------------------------------------------------------------------------------


def extism_once() -> tuple[Callable[[], None] | None, str]:
    """One fresh ``Plugin(compiled)`` + ``call`` of the Extism guest, or (None, why not)."""
    try:
        import extism
        from extism.extism import CompiledPlugin
    except ImportError:
        return None, "extism not installed"
    seen = []

    @extism.host_fn(
        name="push_send_to_user",
        namespace="extism:host/user",
        signature=([extism.ValType.I64, extism.ValType.I64], [extism.ValType.I64]),
    )
    def push(plugin: Any, params: Any, results: Any) -> None:
        user, msg = plugin.input_string(params[0]), plugin.input_string(params[1])
        seen.append(bool(user and msg))
        results[0].value = 1

    compiled = CompiledPlugin({"wasm": [{"data": bytes(wasmtime.wat2wasm(EXTISM_WAT))}]}, functions=[push])

    def once() -> None:
        plugin = extism.Plugin(compiled, functions=[push])
        plugin.call("handle", b"")

    once()
    assert seen == [True]
    return once, f"extism {extism.extism_version()}"


async def interleaved(
    subjects: dict[str, Callable[[], Any]], iterations: int, rounds: int
) -> dict[str, float]:
    """µs per call of each subject: the best of ``rounds`` rounds, the subjects taking turns within
    each round, so a burst of noise from the machine's neighbours hits every subject alike instead
    of whichever happened to be measured then. (Coroutine functions are awaited.)"""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, fn in subjects.items():
            is_async = asyncio.iscoroutinefunction(fn)
            start = time.perf_counter()
            if is_async:
                for _ in range(iterations):
                    await fn()
            else:
                for _ in range(iterations):
                    fn()
            per_call = (time.perf_counter() - start) / iterations
            best[name] = min(best.get(name, per_call), per_call)
    return {name: seconds * 1e6 for name, seconds in best.items()}


# -- main ------------------------------------------------------------------------------------------


async def main(quick: bool) -> dict[str, Any]:
    it, rounds = (300, 5) if quick else (2000, 7)
    loop_n = 1000  # max_sends' platform maximum
    call_n = 20_000 if quick else 200_000
    rows: list[tuple[str, float | None, str]] = []

    floor = Floor()
    floor.invoke()
    floor_call = floor.call_us(call_n, rounds)
    extism_call, extism_note = extism_once()

    with tempfile.TemporaryDirectory() as tmp:
        manager, store, how = await real_manager(Path(tmp))
        memory_rt = Runtime(MemorySender())
        real_rt = Runtime(manager) if manager is not None else None
        try:
            compiled = memory_rt.compile(WELCOME, namespace="acme")
            empty = memory_rt.compile(EMPTY_WAT, namespace="acme")
            for rt in (memory_rt, real_rt):
                if rt is not None:
                    check = await rt.invoke("bench", compiled, WELCOME_INPUT)
                    assert check.ok and check.output == "welcomed alice: 1/1 devices", check.to_dict()

            async def welcome_memory() -> None:
                await memory_rt.invoke("bench", compiled, WELCOME_INPUT)

            async def welcome_delivered() -> None:
                assert real_rt is not None
                await real_rt.invoke("bench", compiled, WELCOME_INPUT)

            async def empty_guest() -> None:
                await memory_rt.invoke("bench", empty)

            subjects: dict[str, Callable[[], Any]] = {"floor": floor.invoke, "memory": welcome_memory,
                                                      "empty": empty_guest}
            if real_rt is not None:
                subjects["delivered"] = welcome_delivered
            if extism_call is not None:
                subjects["extism"] = extism_call
            best = await interleaved(subjects, it, rounds)
            floor_invoke, mem_invoke, empty_invoke = best["floor"], best["memory"], best["empty"]
            invoke = best.get("delivered", mem_invoke)
            extism_us = best.get("extism")

            mem_send_guest, mem_send_total = await send_call_us(memory_rt, loop_n, rounds)
            send_guest, send_total = mem_send_guest, mem_send_total
            fanout: float | None = None
            if real_rt is not None:
                send_guest, send_total = await send_call_us(real_rt, loop_n, rounds)
                fanout = await fanout_us(manager, store, it, rounds)
        finally:
            await memory_rt.aclose()
            if real_rt is not None:
                await real_rt.aclose()
            if manager is not None:
                await manager.aclose()
                await store.aclose()

    rows.append(("floor: fresh Store + instantiate + handle (1 host call, 2 strings)", floor_invoke, "raw wasmtime-py"))
    rows.append(("floor: host call reading 2 strings (guest loop)", floor_call, "raw wasmtime-py"))
    rows.append(
        ("wasmhost: invoke welcome.wasm (send + wait, delivered)", invoke, how if manager else "in-memory sender")
    )
    rows.append(("wasmhost: invoke welcome.wasm, in-memory sender", mem_invoke, "runtime only"))
    rows.append(("wasmhost: invoke empty guest", empty_invoke, "Store + instantiate + call, on the loop"))
    rows.append(("wasmhost: push_send_to_user call (guest loop, no devices)", send_guest, how))
    rows.append(("wasmhost: per send end to end (incl. delivery)", send_total, how))
    rows.append(("wasmhost: push_send_to_user call, in-memory sender", mem_send_guest, "runtime only"))
    rows.append(("wasmhost: per send end to end, in-memory sender", mem_send_total, "runtime only"))
    rows.append(("wasmhost: send to a user with 20 outbox devices", fanout, "20 rows, one commit"))
    rows.append(("extism: fresh Plugin(compiled) + call (1 host call, 2 strings)", extism_us, extism_note))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'µs':>9}  notes")
    for name, value, note in rows:
        shown = f"{value:9.1f}" if value is not None else "      n/a"
        print(f"{name:<{width}}  {shown}  {note}")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {'quick' if quick else 'full'} run; invocations:"
        f" best of {rounds} interleaved rounds of {it}; push_send_to_user time is the guest's"
    )
    return {
        "invoke_us": round(invoke, 1),
        "floor_invoke_us": round(floor_invoke, 1),
        "invoke_ratio": round(invoke / floor_invoke, 2),
        "send_call_us": round(send_guest, 2),
        "floor_call_us": round(floor_call, 2),
        "send_call_ratio": round(send_guest / floor_call, 2),
        "extism_invoke_us": round(extism_us, 1) if extism_us is not None else None,
        "invoke_vs_extism": round(invoke / extism_us, 2) if extism_us is not None else None,
        # The same with an in-memory sender: what the runtime itself costs, without push and SQLite.
        "invoke_runtime_us": round(mem_invoke, 1),
        "invoke_runtime_ratio": round(mem_invoke / floor_invoke, 2),
        "send_call_runtime_us": round(mem_send_guest, 2),
        "send_call_runtime_ratio": round(mem_send_guest / floor_call, 2),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (finishes within 60 s)")
    args = parser.parse_args()
    summary = asyncio.run(main(args.quick))
    print(json.dumps(summary))


if __name__ == "__main__":
    cli()
