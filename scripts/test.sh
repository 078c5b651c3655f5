#!/usr/bin/env bash
# The test command: set up .venv, run the test suite, then the `ray job submit` smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
bash scripts/submit_smoke.sh
