#!/usr/bin/env bash
# Builds __IDENT__.wasm, a wasmhost:guest component, with componentize-qjs 0.4.5 (QuickJS; npm install
# fetches it). --stub-wasi: the component imports only the host interface. About 1 MB; builds are
# not byte-for-byte reproducible.
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-qjs ] || npm install --no-audit --no-fund --silent
node_modules/.bin/componentize-qjs --wit wit --js app.js -n guest --sync --opt-size --stub-wasi \
    -o __IDENT__.wasm >/dev/null
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
