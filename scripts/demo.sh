#!/usr/bin/env bash
# Sets everything up, then runs the demo against a local control plane and NATS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m celeriac_devenv.demo "$@"
