"""Evaluation as a Ray Data job against evaluation in the driver, side by side on the same rows.

    python bench/evaluate_job.py --checkpoint runs/x/checkpoint_… --data data/ --rows 1000000 7500000

The test split is read again and again until it has ``--rows`` rows. For each size, in one run:

- **job**: what `tamor evaluate` runs (:func:`tamor.platform.evaluate.evaluate_model`): batch inference with
  ``map_batches`` on scoring actors, each batch's probabilities added to per-cell score histograms on the driver;
- **driver**: the same model over the same rows in the driver process (``iter_torch_batches`` →
  :func:`~tamor.platform.step.predict_split`, every prediction kept), then the same metrics at once.

Prints rows/s of each, their ratio, and the driver's peak RSS above its level before the run (sampled every 0.1 s).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import torch


def rss_mib() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def measured(fn) -> tuple[float, float]:
    """``(seconds, peak RSS above the start in MiB)`` of ``fn()``."""
    base, peak, done = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], rss_mib() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, max(peak[0], rss_mib() - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--no-driver", action="store_true", help="time the Ray Data job alone")
    args = ap.parse_args()

    from tamor.models.factory import load_model
    from tamor.models.feature_spec import FeatureSpec
    from tamor.models.metrics import evaluate_predictions
    from tamor.platform.evaluate import evaluate_model
    from tamor.platform.ray_env import init_ray
    from tamor.platform.step import predict_split
    from tamor.platform.train import SpecCollate, read_split

    init_ray(num_cpus=2, log_dir=Path(tempfile.mkdtemp(prefix="evaluate-job-logs-")), verbose=False)
    model, spec = load_model(args.checkpoint), FeatureSpec.load(args.data)
    test = read_split(args.data, "test", spec)
    per_copy = test.count()

    def rows(n: int):
        copies = -(-n // per_copy)
        return test.union(*[read_split(args.data, "test", spec) for _ in range(copies - 1)]).limit(n)

    def in_driver(n: int) -> None:
        preds = predict_split(model, rows(n).iter_torch_batches(batch_size=args.batch_size, collate_fn=SpecCollate(spec)),
                              torch.device("cpu"))
        evaluate_predictions(spec, preds["probs"], preds["labels"], preds["label_mask"], preds["tier"], preds["scenario"])

    print(f"{'rows':>10} {'path':>7} {'seconds':>8} {'rows/s':>10} {'peak RSS':>9}")
    for n in args.rows:
        results = {"job": measured(lambda: evaluate_model(model, rows(n), spec, args.batch_size))}
        if not args.no_driver:
            results["driver"] = measured(lambda: in_driver(n))
        for path, (seconds, peak) in results.items():
            print(f"{n:>10,} {path:>7} {seconds:>8.1f} {n / seconds:>10,.0f} {peak:>6.0f} MiB", flush=True)
        if "driver" in results:
            print(f"{n:>10,} job / driver speed: {results['driver'][0] / results['job'][0]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
