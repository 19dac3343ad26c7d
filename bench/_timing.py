"""Measurement helpers shared by the provider benchmarks."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from wasmhost.store.base import Device

__all__ = ["best_rates", "bench_devices"]

Side = tuple[str, Callable[[], Awaitable[int]]]


def bench_devices(provider: str, tokens: list[str]) -> list[Device]:
    """One benchmark user's devices, one per token."""
    return [Device(f"r{i}", "bench", "u", f"d{i}", provider, "", "", 0.0, 0.0, t) for i, t in enumerate(tokens)]


async def best_rates(sides: list[Side], n: int, rounds: int, *, warmup: bool = False) -> dict[str, float]:
    """Run each side `rounds` times, interleaved (after one warm-up run each if asked); sends per second
    of each side's fastest round. A round that does not deliver all `n` sends is an error, not a number."""
    if warmup:
        for _name, run in sides:
            await run()
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in sides:
            started = time.perf_counter()
            ok = await run()
            elapsed = time.perf_counter() - started
            if ok != n:
                raise RuntimeError(f"{name}: only {ok} of {n} sends succeeded")
            best[name] = max(best.get(name, 0.0), n / elapsed)
    return best
