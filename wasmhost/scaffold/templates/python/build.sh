#!/usr/bin/env bash
# Builds __IDENT__.wasm, a wasmhost:guest component, with componentize-py (pip install componentize-py==0.25.1).
# --stub-wasi: the component imports only the host interface. It is about 18 MB (a Python
# interpreter snapshot); builds are not byte-for-byte reproducible.
set -euo pipefail
cd "$(dirname "$0")"
CPY=${COMPONENTIZE_PY:-componentize-py}
"$CPY" -d wit -w guest componentize --stub-wasi app -o __IDENT__.wasm >/dev/null
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
