#!/usr/bin/env bash
# Builds notify_followers.wasm with Zig 0.17.1 from the ziglang wheel (pip install ziglang==0.17.1).
# Deterministic: the same sources and Zig version give the same bytes (tests/guests checks this).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
OUT=${1:-notify_followers.wasm}
"$PYTHON" -m ziglang build-exe \
    -target wasm32-freestanding -fno-entry -fsingle-threaded -O ReleaseSmall -fstrip --export=handle \
    --name notify_followers -femit-bin="$OUT" \
    --dep wasmhost -Mroot=notify_followers.zig -Mwasmhost=../sdk/zig/wasmhost.zig
