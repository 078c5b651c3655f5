#!/usr/bin/env bash
# Real data end to end: UCI census-income (../shared/data/census-income) → preprocess → TAMOR and MMoE → the table.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
src=${CENSUS:-../shared/data/census-income/census-income.test.gz}
out=${RUN_DIR:-runs/census-$(date +%Y%m%d-%H%M%S)}
epochs=${EPOCHS:-6}
tamor preprocess --source "$src" --schema census_income --out "$out/data"
for model in tamor mmoe; do
  tamor train --data "$out/data" --model "$model" --epochs "$epochs" --num-workers 1 --name "census-$model" \
    --storage "$out/train" --no-evaluate
done
best() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$out/train/census-$1/summary.json"; }
tamor evaluate --data "$out/data" --checkpoint "$(best tamor)" --baseline "$(best mmoe)" --out "$out"
echo "census table: $out/paper_table.md"
