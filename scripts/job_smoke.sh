#!/usr/bin/env bash
# The entrypoint of the `ray job submit` smoke test: a tiny generate → preprocess → train on the cluster.
set -euo pipefail
out=$(mktemp -d)
tamor generate --rows 6000 --users 600 --items 60 --out "$out"
tamor preprocess --source "$out/logs" --out "$out/data"
tamor train --data "$out/data" --epochs 1 --storage "$out/runs" --wandb disabled --no-evaluate
echo "job smoke test done: $out"
