#!/usr/bin/env bash
# Installs what the benchmarks compare against: Debian's redis-server (when it is
# not on PATH) and the pinned Python tools of bench/requirements.txt (Celery with
# its Redis transport, matplotlib, py-spy) into the project's .venv.
# Run scripts/setup.sh first. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    echo "bench/setup.sh: run scripts/setup.sh first (no .venv)" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "bench/setup.sh: installing redis-server" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/setup.sh: redis-server is missing; install Debian's redis-server" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    }
fi
.venv/bin/python -m pip install --quiet -r bench/requirements.txt
echo "bench/setup.sh: ready ($(redis-server --version | cut -d' ' -f3))" >&2
