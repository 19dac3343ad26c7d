#!/usr/bin/env bash
# Chromium for the console's browser tests (tests/console): Playwright for Python drives Debian's
# browser through executable_path, since Playwright's own browser download is not reachable here.
# Idempotent: a second run only checks that the binary is there.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version
