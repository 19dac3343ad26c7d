#!/usr/bin/env bash
# Builds notify_followers.wasm with AssemblyScript 0.28.20, pinned with its binaryen by
# package-lock.json (npm ci). Deterministic: tests/guests rebuilds it and compares the bytes.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-notify_followers.wasm}
[ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund --silent
node_modules/.bin/asc notify_followers.ts -o "$OUT" -O3 --runtime stub --use abort=
