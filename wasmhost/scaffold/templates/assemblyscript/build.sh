#!/usr/bin/env bash
# Builds __IDENT__.wasm with AssemblyScript 0.28.20 (npm install fetches it into node_modules).
# --runtime stub: no garbage collector (one invocation, one fresh instance). abort goes to the SDK's
# `abort`, which logs the message and location before trapping (otherwise the module would import
# env.abort, which the host refuses).
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --silent
node_modules/.bin/asc assembly/index.ts -o __IDENT__.wasm -O3 --runtime stub --use abort=assembly/wasmhost/abort
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
