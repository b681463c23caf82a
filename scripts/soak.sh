#!/usr/bin/env bash
# make soak: builds the soak driver and runs it for SOAK_MINUTES (default 10).
#   SOAK_MINUTES=3 scripts/soak.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/soak
exec "$bin" "${SOAK_MINUTES:-10}"
