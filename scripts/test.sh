#!/usr/bin/env bash
# The test command: set up .venv, run the test suite, then the `ray job submit` smoke tests (one node, three nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { local start=$SECONDS; "$@"; echo "test: '$*' took $((SECONDS - start)) s"; }
phase bash scripts/setup.sh
phase .venv/bin/python -m pytest -q "$@"
phase bash scripts/submit_smoke.sh
phase .venv/bin/python scripts/cluster_smoke.py  # three nodes: the pipeline job, a node lost in training and under Serve
