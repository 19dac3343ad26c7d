#!/usr/bin/env bash
# Builds __IDENT__.wasm for wasm32-unknown-unknown, size-tuned (Cargo.toml's release profile).
#   rustup:  rustup target add wasm32-unknown-unknown   (then this script uses cargo)
#   Debian:  apt-get install rustc libstd-rust-dev-wasm32 lld-14 [cargo]
# No crates are needed: the SDK (src/wasmhost.rs) has its own small JSON reader.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=wasm32-unknown-unknown
OUT=target/$TARGET/release/__IDENT__.wasm
if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    cargo build --release --target "$TARGET"                       # rustup's toolchain with the target
elif [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/$TARGET ]; then
    RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --target "$TARGET"   # Debian's cargo and rustc
else
    # No cargo for this target: rustc directly, with the release profile's flags.
    RUSTC=${RUSTC:-$( [ -d /usr/lib/rustlib/$TARGET ] && echo /usr/bin/rustc || echo rustc )}
    if [ ! -d "$("$RUSTC" --print sysroot)/lib/rustlib/$TARGET" ]; then
        echo "build.sh: $RUSTC has no $TARGET standard library: run \`rustup target add $TARGET\`" \
             "(or apt-get install libstd-rust-dev-wasm32 lld-14)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$OUT")"
    "$RUSTC" --edition 2021 --target "$TARGET" --crate-type cdylib --crate-name __IDENT__ \
        -C opt-level=s -C lto -C codegen-units=1 -C panic=abort -C strip=debuginfo -o "$OUT" src/lib.rs
fi
cp "$OUT" __IDENT__.wasm
echo "built __IDENT__.wasm ($(wc -c < __IDENT__.wasm) bytes)"
