#!/usr/bin/env bash
# Builds notify_followers.wasm with Debian's rustc 1.63 and its wasm32 std:
#   apt-get install -y --no-install-recommends rustc libstd-rust-dev-wasm32 lld-14
# /usr/bin/rustc is called explicitly (a rustup rustc earlier on PATH has no wasm32 target here).
# Deterministic: paths are remapped, so the same sources give the same bytes (tests/guests checks this).
set -euo pipefail
cd "$(dirname "$0")"
RUSTC=${RUSTC:-/usr/bin/rustc}
OUT=${1:-notify_followers.wasm}
"$RUSTC" --edition 2021 --target wasm32-unknown-unknown --crate-type cdylib \
    -C opt-level=s -C panic=abort -C lto -C strip=symbols -C codegen-units=1 \
    --remap-path-prefix="$(cd .. && pwd)=/src" \
    -o "$OUT" notify_followers.rs
