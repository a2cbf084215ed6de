#!/usr/bin/env bash
# The main job: publish -> promote -> resolve -> install plan against a throwaway registry.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
exec .venv/bin/python scripts/demo.py "$@"
