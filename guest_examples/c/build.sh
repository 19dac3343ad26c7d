#!/usr/bin/env bash
# Builds notify_followers.wasm with zig cc from the ziglang wheel (pip install ziglang==0.17.1):
# freestanding, no libc, only the "wasmhost" imports. Deterministic (tests/guests checks the bytes).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
OUT=${1:-notify_followers.wasm}
"$PYTHON" -m ziglang cc --target=wasm32-freestanding -Os -nostdlib -s -Wl,--no-entry \
    -o "$OUT" notify_followers.c
