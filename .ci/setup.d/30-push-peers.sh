#!/usr/bin/env bash
# sniffio: httpcore imports it on every lock it creates and, when it is missing, pays a failed import
# (a sys.path scan) each time — about 3x the per-request cost of the push providers. It belongs in
# pyproject's dependencies; until it is there, install it here. Idempotent (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/pip install -q 'sniffio>=1.3'
