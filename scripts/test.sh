#!/usr/bin/env bash
# The test command: set up .venv, run the test suite, then the `ray job submit` smoke tests (one node, three nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
bash scripts/submit_smoke.sh
.venv/bin/python scripts/cluster_smoke.py  # three nodes: the pipeline job, a node lost in training and under Serve
