#!/usr/bin/env bash
# Creates .venv, installs Celeriac with its development tools, and builds (or
# finds in the cache) every binary of the local environment. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: Python >= 3.11 is required (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if ! command -v go >/dev/null 2>&1; then
    echo "setup: the Go toolchain (>= 1.26) is required to build the local Kubernetes," >&2
    echo "       etcd, kwok, helm, nats-server and the Go client example from the Go module proxy" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]' -e ./devenv
# The dashboard's browser test drives Debian's chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
        echo "setup: installing chromium (for the dashboard's browser test)" >&2
        # Fresh package lists only when the install needs them.
        $SUDO apt-get install -y --no-install-recommends chromium \
            || { $SUDO apt-get update -qq && $SUDO apt-get install -y --no-install-recommends chromium; } \
            || echo "setup: could not install chromium; the browser test will be skipped" >&2
    fi
fi
.venv/bin/celeriac-devenv build
