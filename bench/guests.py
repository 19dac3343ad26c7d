"""Guest benchmark: notify-followers in every example language, from cold start to warm invocations.

    python -m bench.guests [--quick]

For each language's checked-in example (guest_examples/<lang>/notify_followers.wasm):

* size — the module or component as shipped;
* first load — a fresh process with an empty cache: ``runtime.compile`` (hash, compile, validate,
  write the signed artifact to disk);
* cached load — another fresh process on the same cache folder: ``runtime.compile`` must load the
  serialized artifact (the 18 MB Python component included), never compile;
* warm invoke — median ``await runtime.invoke`` of notify-followers (4 followers, 3 sends; an
  in-memory sender, so this is the guest and runtime cost, not delivery).

Ratios are against numbers measured in the same run: ``load_speedup`` = first / cached load, and
``invoke_vs_wat`` = a language's warm invoke over the hand-written WAT module's.
Goal: every cached load under 50 ms (``cached_load_goal_met``). The last line is one JSON object
keyed by language.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "guest_examples"
LANGS = ["wat", "c", "zig", "assemblyscript", "rust", "go", "python", "javascript"]
CACHED_LOAD_GOAL_MS = 50.0
KEY = b"bench-guests-key-0123456789abcdef"
INPUT = json.dumps({"author": "Ann", "followers": ["alice", "bob", "carol", ""], "text": "new post ✓"}).encode()


def module_path(lang: str) -> Path:
    return EXAMPLES / lang / "notify_followers.wasm"


def read_module(lang: str) -> bytes:
    return module_path(lang).read_bytes()


class Sender:
    """In-memory: alice two devices, bob one, carol none."""

    async def accept(self, namespace: str, user_id: str, message: Any, *, deadline: float | None = None) -> Any:
        from wasmhost.push import Accepted
        from wasmhost.push.report import DeviceResult, SendReport

        n = {"alice": 2, "bob": 1}.get(user_id, 0)
        return Accepted(SendReport([DeviceResult(f"{user_id}-{i}", "outbox", True, 200, attempts=1) for i in range(n)]))


async def worker(lang: str, cache: Path, invocations: int) -> dict[str, Any]:
    """One fresh process: load once (from wherever the cache says), then invoke warm."""
    from wasmhost.runtime import Runtime

    source = read_module(lang)
    runtime = Runtime(Sender(), cache_dir=cache, cache_key=KEY)
    try:
        started = time.perf_counter()
        compiled = runtime.compile(source, namespace="acme")
        load_ms = (time.perf_counter() - started) * 1000
        times = []
        output = ""
        for _ in range(invocations):
            started = time.perf_counter()
            result = await runtime.invoke("bench", compiled, INPUT)
            times.append((time.perf_counter() - started) * 1000)
            if not result.ok:
                raise SystemExit(f"{lang}: invocation failed: {result.error} {result.code}")
            output = result.output
    finally:
        await runtime.aclose()
    return {"origin": compiled.origin, "load_ms": load_ms, "invoke_ms": statistics.median(times) if times else None,
            "output": output}


def spawn(lang: str, cache: Path, invocations: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.guests", "--worker", lang, "--cache", str(cache), "--n", str(invocations)],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{lang}: worker failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer invocations")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(args.worker, Path(args.cache), args.n))))
        return

    invocations = 20 if args.quick else 200
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wasmhost-bench-guests-") as tmp:
        for lang in LANGS:
            cache = Path(tmp) / lang
            first = spawn(lang, cache, 0)
            cached = spawn(lang, cache, invocations)
            if first["origin"] != "compiled" or cached["origin"] != "disk":
                got = f"{first['origin']}, {cached['origin']}"
                raise SystemExit(f"{lang}: expected a compile then a disk load, got {got}")
            summary[lang] = {
                "size_bytes": os.path.getsize(module_path(lang)),
                "first_load_ms": round(first["load_ms"], 2),
                "cached_load_ms": round(cached["load_ms"], 2),
                "load_speedup": round(first["load_ms"] / max(cached["load_ms"], 1e-6), 1),
                "warm_invoke_ms": round(cached["invoke_ms"], 3),
                "output": cached["output"],
            }
    wat_ms = summary["wat"]["warm_invoke_ms"]
    print(f"{'language':<15}{'size':>12}{'first load':>14}{'cached load':>14}{'speedup':>10}"
          f"{'warm invoke':>14}{'vs WAT':>9}")
    for lang, row in summary.items():
        row["invoke_vs_wat"] = round(row["warm_invoke_ms"] / wat_ms, 2)
        print(f"{lang:<15}{row['size_bytes']:>12,}{row['first_load_ms']:>11.1f} ms{row['cached_load_ms']:>11.1f} ms"
              f"{row['load_speedup']:>9.0f}x{row['warm_invoke_ms']:>11.3f} ms{row['invoke_vs_wat']:>8.1f}x")
    outputs = {row.pop("output") for row in summary.values()}
    worst = max(row["cached_load_ms"] for row in summary.values())
    print(f"same summary from every language: {len(outputs) == 1} ({outputs.pop() if len(outputs) == 1 else outputs})")
    print(f"slowest cached load {worst:.1f} ms (goal < {CACHED_LOAD_GOAL_MS:.0f} ms)")
    summary["cached_load_goal_met"] = worst < CACHED_LOAD_GOAL_MS
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
