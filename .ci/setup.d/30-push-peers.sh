#!/usr/bin/env bash
# Push providers. sniffio: httpcore imports it on every lock it creates and, when it is missing, pays a
# failed import (a sys.path scan) each time — it tripled per-request cost (should become a pyproject
# dependency). http-ece is the tests' independent RFC 8291 decryptor; pywebpush and exponent-server-sdk
# are the peers bench/providers.py measures against. Idempotent (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/pip install -q 'sniffio>=1.3' 'http-ece>=1.2' 'pywebpush>=2.0' 'exponent-server-sdk>=2.2'
