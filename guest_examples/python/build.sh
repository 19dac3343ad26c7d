#!/usr/bin/env bash
# Builds notify_followers.wasm, a wasmhost:guest component, with componentize-py 0.25.1
# (pip install componentize-py==0.25.1). --stub-wasi: the component imports only the host interface.
# Component builds are not byte-for-byte reproducible, so the build writes a stamp beside the .wasm:
# the tool version, the sha256 of every input (this script, app.py, the WIT) and of the output.
# tests/guests checks that the stamp matches the sources and the checked-in .wasm.
set -euo pipefail
cd "$(dirname "$0")"
CPY=${COMPONENTIZE_PY:-componentize-py}
OUT=${1:-notify_followers.wasm}
"$CPY" -d ../wit -w guest componentize --stub-wasi app -o "$OUT" >/dev/null
{
    echo "tool: $("$CPY" --version)"
    for f in build.sh app.py ../wit/guest.wit; do echo "source: $(sha256sum "$f")"; done
    echo "wasm: $(sha256sum "$OUT" | cut -d' ' -f1)"
} > "$OUT.stamp"
