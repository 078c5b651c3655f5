#!/usr/bin/env bash
# The main job on the built-in synthetic world: generate → preprocess → train TAMOR and MMoE → the paper's table.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
run=${RUN_DIR:-runs/main-$(date +%Y%m%d-%H%M%S)}
tamor demo --out "$run" "$@"
