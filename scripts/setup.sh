#!/usr/bin/env bash
# Set up a virtual environment in .venv with tamor and its test dependencies (idempotent).
# Installers' output goes to .venv/setup.log; the console gets one line, or the log's tail on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .venv
log=.venv/setup.log
: > "$log"
fail() { echo "setup failed; the last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
# A real Redis server for the Redis feature-store backend and its tests.
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -q redis-server || (apt-get update -q && apt-get install -y -q redis-server)) >>"$log" 2>&1 \
    || echo "setup: could not install redis-server; the Redis tests will be skipped" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv >>"$log" 2>&1 || fail
# What was installed, by what: pyproject.toml and this script. Unchanged, the installers are skipped (CI's second call).
stamp=.venv/setup.stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import tamor, torch, ray" >>"$log" 2>&1; then
  echo "setup: .venv up to date (log: $log)"
  exit 0
fi
{
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of PyTorch first: an unpinned torch can pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  .venv/bin/python -m pip install -q -e ".[test,bench]"
} >>"$log" 2>&1 || fail
echo "$want" > "$stamp"
echo "setup: .venv ready (log: $log)"
