"""Evaluation streamed into score histograms against evaluation of every prediction gathered, side by side.

    python bench/evaluate_stream.py --checkpoint runs/x/checkpoint_… --data data/ --rows 1000000 7500000

The test split's rows are repeated into Parquet files of ``--rows`` rows (written once, before the clocks start).
For each size, in one run:

- **streamed**: what `tamor evaluate` runs (:func:`tamor.platform.evaluate.evaluate_model`): Ray Data batches scored
  in the driver, each batch's probabilities added to per-cell score histograms and let go;
- **gathered**: the same model over the same rows (:func:`~tamor.platform.step.predict_split`, every prediction
  kept), then the same metrics at once: what `tamor evaluate` did before.

Prints rows/s of each, their ratio, and the driver's peak RSS above its level before the run (sampled every 0.1 s),
with its private part (what the driver itself holds, not the object store's shared pages).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray

FILE_ROWS = 100_000  # rows per Parquet file of the repeated split


def rss_mib() -> np.ndarray:
    """The driver's resident memory and its private part, in MiB: ``[VmRSS, RssAnon]``. The rest is mostly pages of
    Ray's shared object store that the driver has read blocks from."""
    status = Path("/proc/self/status").read_text()
    return np.array([int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "RssAnon")])


def measured(fn) -> tuple[float, np.ndarray]:
    """``(seconds, peak [RSS, private RSS] above the start in MiB)`` of ``fn()``."""
    base, peak, done = rss_mib(), [np.zeros(2)], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = np.maximum(peak[0], rss_mib() - base)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return seconds, np.maximum(peak[0], rss_mib() - base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--streamed-only", action="store_true", help="time the streamed evaluation alone")
    ap.add_argument("--device", default="cpu", help="where the model scores (cuda: this machine's GPU)")
    args = ap.parse_args()

    from tamor.models.factory import load_model
    from tamor.models.feature_spec import FeatureSpec
    from tamor.models.inputs import batch_columns
    from tamor.models.metrics import evaluate_predictions
    from tamor.platform.data_dir import DataDir
    from tamor.platform.evaluate import evaluate_model, scoring_device
    from tamor.platform.ray_env import init_ray
    from tamor.platform.step import predict_split
    from tamor.platform.train import SpecCollate

    init_ray(num_cpus=2, log_dir=Path(tempfile.mkdtemp(prefix="evaluate-stream-logs-")), verbose=False)
    device = scoring_device(args.device)
    model, spec = load_model(args.checkpoint, map_location=device), FeatureSpec.load(args.data)
    columns = batch_columns(spec)
    test = pd.read_parquet(DataDir(args.data).split("test"), columns=columns)
    part = pd.concat([test] * -(-FILE_ROWS // len(test)), ignore_index=True).head(FILE_ROWS)
    work = Path(tempfile.mkdtemp(prefix="evaluate-stream-"))

    def rows(n: int):
        """A split of ``n`` rows on disk, as `tamor preprocess` leaves one: Parquet files of the test rows repeated."""
        split = work / str(n)
        if not split.exists():
            split.mkdir()
            for i, start in enumerate(range(0, n, FILE_ROWS)):
                part.head(n - start).to_parquet(split / f"part-{i:04d}.parquet")
        return ray.data.read_parquet(str(split), num_cpus=0.25).select_columns(columns)

    def gathered(n: int) -> None:
        preds = predict_split(model, rows(n).iter_torch_batches(batch_size=args.batch_size, collate_fn=SpecCollate(spec)),
                              device)
        evaluate_predictions(spec, preds["probs"], preds["labels"], preds["label_mask"], preds["tier"], preds["scenario"])

    print(f"{'rows':>10} {'path':>9} {'seconds':>8} {'rows/s':>10} {'peak RSS':>10} {'of it private':>14}")
    for n in args.rows:
        rows(n)
        results = {"streamed": measured(lambda: evaluate_model(model, rows(n), spec, args.batch_size, args.device))}
        if not args.streamed_only:
            results["gathered"] = measured(lambda: gathered(n))
        for path, (seconds, peak) in results.items():
            print(f"{n:>10,} {path:>9} {seconds:>8.1f} {n / seconds:>10,.0f} {peak[0]:>6.0f} MiB {peak[1]:>10.0f} MiB", flush=True)
        if "gathered" in results:
            print(f"{n:>10,} streamed / gathered speed: {results['gathered'][0] / results['streamed'][0]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
