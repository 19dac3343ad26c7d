#!/usr/bin/env bash
# Assembles notify_followers.wasm with the WAT parser inside the wasmtime wheel (wasmtime==50.0.1).
# wasmhost also runs the .wat directly; the .wasm is for tools that want a binary.
# Deterministic: tests/guests reassembles it and compares the bytes.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
OUT=${1:-notify_followers.wasm}
"$PYTHON" -c 'import sys, wasmtime; open(sys.argv[2], "wb").write(wasmtime.wat2wasm(open(sys.argv[1]).read()))' \
    notify_followers.wat "$OUT"
