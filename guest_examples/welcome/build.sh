#!/usr/bin/env sh
# Rebuild welcome.wasm from welcome.c with the pinned zig (pip install ziglang==0.17.1).
# The output is byte-for-byte reproducible; tests/runtime checks it against the checked-in file.
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
"$PYTHON" -m ziglang cc --target=wasm32-freestanding -Os -nostdlib -s -Wl,--no-entry \
    -o welcome.wasm welcome.c
