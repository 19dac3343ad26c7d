#!/usr/bin/env bash
# Web Push / Expo: http-ece is the tests' independent RFC 8291 decryptor; pywebpush and
# exponent-server-sdk are the peers bench/providers.py measures against. Idempotent (pip skips installed).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/pip install -q 'http-ece>=1.2' 'pywebpush>=2.0' 'exponent-server-sdk>=2.2'
