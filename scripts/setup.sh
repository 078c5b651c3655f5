#!/usr/bin/env bash
# Set up a virtual environment in .venv with tamor and its test dependencies (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
# A real Redis server for the Redis feature-store backend and its tests.
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q redis-server >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1)) \
      || echo "setup: could not install redis-server; the Redis tests will be skipped" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of PyTorch first: an unpinned torch can pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install -q -e ".[test]"
