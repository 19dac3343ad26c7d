#!/usr/bin/env bash
# Gateway tests: schemathesis drives the served OpenAPI document (tests/gateway/test_openapi.py).
# Installed into the project venv; idempotent (pip skips an installed, satisfying version).
set -euo pipefail
cd "$(dirname "$0")/../.."

.venv/bin/python -c 'import schemathesis' 2>/dev/null || .venv/bin/pip install -q 'schemathesis>=4.0,<5'
.venv/bin/python -c 'import schemathesis; print("schemathesis", schemathesis.SCHEMATHESIS_VERSION)'
