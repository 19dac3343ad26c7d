#!/usr/bin/env bash
# Builds __IDENT__.wasm: freestanding C (no libc), only the "wasmhost" imports, size-optimised.
# Needs zig (https://ziglang.org) or its PyPI wheel: pip install ziglang==0.17.1
set -euo pipefail
cd "$(dirname "$0")"
if command -v zig >/dev/null 2>&1; then ZIG=(zig); else ZIG=("${PYTHON:-python3}" -m ziglang); fi
"${ZIG[@]}" cc --target=wasm32-freestanding -Os -nostdlib -Wl,--no-entry -Wl,--strip-debug \
    -o __IDENT__.wasm __IDENT__.c
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
