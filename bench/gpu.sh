#!/usr/bin/env bash
# One GPU run, all figures in one go (under 10 minutes on one H200):
#   (a) TAMOR and MMoE samples/s through Ray Train on 1 GPU in bf16 against a bare PyTorch loop on the
#       same GPU (the ratio; goal >= 0.9x),
#   (b) the batched-expert MMoE forward+backward samples/s at batch 4096 and 32768,
#   (c) the serving graph's p50 with the Ranker on the GPU (when Ray Serve is installed there),
#   (d) `tamor evaluate`'s streamed evaluation scored on the CPU and on the GPU, the same checkpoint and rows.
#
#   bash bench/gpu.sh            # on the GPU machine (device tool: carry .gpu, made by ../shared/tools/gpu-bundle)
#   bash bench/gpu.sh --cpu      # the same steps at toy sizes on CPU: checks the script before spending GPU time
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:---gpu}
if ! python -c "import ray" 2>/dev/null; then
  if [[ -f .gpu/activate ]]; then source .gpu/activate; else source .venv/bin/activate; fi
fi
export RAY_ADDRESS=local
work=$(mktemp -d)
if [[ "$mode" == "--cpu" ]]; then
  rows=60000 epochs=2 batch=1024 train_flags="" step=(--device cpu --batch-sizes 512 --seconds 0.3) serve=(--device cpu)
  eval_rows=100000 eval_devices=(cpu)
else
  rows=4000000 epochs=3 batch=4096 train_flags="--gpu" step=(--device cuda --bf16 --batch-sizes 4096 32768 --seconds 3) serve=(--device cuda)
  eval_rows=2000000 eval_devices=(cpu cuda)
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

echo "== (a) Ray Train vs a bare loop, $rows rows, batch $batch"
for model in tamor mmoe; do
  python bench/train_throughput.py --rows "$rows" --epochs "$epochs" --batch-size "$batch" --model "$model" \
    --work-dir "$work" $train_flags 2>"$work/train-$model.log" | grep -oE "(model=.*|tamor train .*|bare PyTorch .*|ratio .*)"
done

echo "== (b) batched experts, forward + backward"
python bench/model_step.py "${step[@]}" 2>"$work/step.log" | tail -n 20

echo "== (c) serving"
if python -c "import ray.serve, fastapi, uvicorn, httpx" 2>/dev/null; then
  python bench/serve_load.py --data "$work/data" --requests 100 --concurrency 1 8 "${serve[@]}" 2>"$work/serve.log" \
    | grep -oE "(Ranker: .*|through a handle.*|hops, .*|hop .*|Ingress → .*|and the rerank.*|[0-9]+ requests per level.*|concurrency \|.*| +[0-9]+ \| .*)"
else
  echo "skipped: Ray Serve, FastAPI, uvicorn or httpx is not installed here"
fi

echo "== (d) evaluation, $eval_rows rows, the last TAMOR checkpoint"
checkpoint=$(ls -d "$work"/runs/tamor-*/checkpoint_*/ | tail -n 1)  # directories, not Ray's snapshot file
for device in "${eval_devices[@]}"; do
  echo "device=$device"
  python bench/evaluate_stream.py --checkpoint "$checkpoint" --data "$work/data" --rows "$eval_rows" --device "$device" \
    --streamed-only 2>"$work/evaluate-$device.log" | tail -n 2
done
