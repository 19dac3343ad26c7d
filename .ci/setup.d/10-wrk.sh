#!/usr/bin/env bash
# wrk, the HTTP load generator `bench.gateway` and `bench.fleet` drive the gateway with. Idempotent.
set -euo pipefail
if ! command -v wrk >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
