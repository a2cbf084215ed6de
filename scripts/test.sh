#!/usr/bin/env bash
# The whole test suite: setup (idempotent), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.tools/bin:$PATH"
echo "[test] ruff" >&2
.venv/bin/ruff check .
echo "[test] mypy --strict" >&2
.venv/bin/mypy --strict ocicore consumer publisher control_plane
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
