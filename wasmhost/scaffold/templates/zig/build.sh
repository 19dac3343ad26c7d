#!/usr/bin/env bash
# Builds __IDENT__.wasm with Zig 0.17.1 (the SDK follows Zig's std, which changes between releases).
# Needs zig 0.17.1 (https://ziglang.org) or its PyPI wheel: pip install ziglang==0.17.1
# build-exe with no entry point (not build-lib); ReleaseSmall; debug info stripped, names kept so
# traps name your functions.
set -euo pipefail
cd "$(dirname "$0")"
if command -v zig >/dev/null 2>&1; then ZIG=(zig); else ZIG=("${PYTHON:-python3}" -m ziglang); fi
"${ZIG[@]}" build-exe -target wasm32-freestanding -fno-entry -fsingle-threaded -O ReleaseSmall --export=handle \
    --name __IDENT__ -femit-bin=__IDENT__.wasm \
    --dep wasmhost -Mroot=__IDENT__.zig -Mwasmhost=wasmhost.zig
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
