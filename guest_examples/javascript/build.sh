#!/usr/bin/env bash
# Builds notify_followers.wasm, a wasmhost:guest component, with componentize-qjs 0.4.5 (QuickJS),
# pinned by package-lock.json (npm ci). --stub-wasi: the component imports only the host interface.
# Component builds are not byte-for-byte reproducible, so the build writes a stamp beside the .wasm:
# the tool version, the sha256 of every input (this script, app.js, the WIT) and of the output.
# tests/guests checks that the stamp matches the sources and the checked-in .wasm.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-notify_followers.wasm}
[ -x node_modules/.bin/componentize-qjs ] || npm ci --no-audit --no-fund --silent
node_modules/.bin/componentize-qjs --wit ../wit --js app.js -n guest --sync --opt-size --stub-wasi -o "$OUT" >/dev/null
{
    echo "tool: componentize-qjs $(node -p 'require("./node_modules/componentize-qjs/package.json").version')"
    for f in build.sh app.js ../wit/guest.wit; do echo "source: $(sha256sum "$f")"; done
    echo "wasm: $(sha256sum "$OUT" | cut -d' ' -f1)"
} > "$OUT.stamp"
