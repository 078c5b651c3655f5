#!/usr/bin/env bash
# Real data: UCI census-income → `tamor preprocess` (Ray Data) → the peer benchmark (tamor's models,
# torch-rechub's MMoE and PLE, HistGradientBoosting; 3 seeds) → runs/census-<time>/peers.md
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
python -m pip install -q -e ".[bench]"
src=${CENSUS:-../shared/data/census-income/census-income.test.gz}
out=${RUN_DIR:-runs/census-$(date +%Y%m%d-%H%M%S)}
tamor preprocess --source "$src" --schema census_income --out "$out/data"
python bench/peers.py --data "$out/data" --seeds "${SEEDS:-3}" --out "$out"
echo "census table: $out/peers.md"
