#!/usr/bin/env bash
# Sets everything up, then runs lint, import contracts, type checks and the whole test suite:
# unit, integration (real nats-server) and end-to-end (real control plane).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== import contracts" >&2
.venv/bin/lint-imports
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/pytest "$@"
