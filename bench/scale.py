"""The whole offline path at scale on one machine: memory must not grow with the data.

    python bench/scale.py --rows 50000000 --work-dir /mnt/big/scale      # the 50 M-row world
    python bench/scale.py --rows 2000000 8000000                          # how memory scales

For each size, in one run: generate the synthetic world (Ray Data) → `tamor preprocess` → one training
epoch of TAMOR with 2 Ray Train workers (train and validation splits sharded and streamed) → the same training
step on the same 2 threads over train rows held in memory (the bare step; its ratio is what Ray Train and Ray
Data cost at this size) → evaluate the checkpoint on the test split (streamed). Prints each stage's wall time,
the driver's peak RSS, the largest peak RSS of any Ray worker process alive after the stage (VmHWM), each
training worker's own peak RSS, and the machine's peak memory in use (sampled from /proc/meminfo every 0.5 s).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch


def _mib(kib: float) -> float:
    return kib / 1024


def memory_in_use_mib() -> float:
    info = dict(re.findall(r"^(\w+):\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M))
    return _mib(int(info["MemTotal"]) - int(info["MemAvailable"]))


def ray_worker_peaks_mib() -> float:
    """The largest VmHWM (peak RSS) among this machine's Ray worker processes (``ray::…``)."""
    peak = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::"):
                continue
            hwm = re.search(r"VmHWM:\s+(\d+) kB", (proc / "status").read_text())
        except OSError:
            continue
        if hwm:
            peak = max(peak, _mib(int(hwm.group(1))))
    return peak


class MemorySampler:
    """The machine's peak memory in use while a stage runs."""

    def __init__(self) -> None:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, memory_in_use_mib())
            self._stop.wait(0.5)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


BARE_ROWS = 1_000_000  # the bare step's rows: enough for a steady rate, few enough to hold as tensors at any size


def bare_step(data_dir: Path, cfg, run_dir: str) -> str:
    """The training step of ``cfg`` on as many threads as it had workers, over up to :data:`BARE_ROWS` train rows held
    in memory (``bench/train_throughput.py: bare_loop``), beside the Ray Train epoch of ``run_dir``."""
    from train_throughput import bare_loop

    from tamor.platform.preprocess import parquet_rows
    from tamor.platform.run_files import read_epochs

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_workers)  # the threads the workers had, one each
    try:
        rate = bare_loop(data_dir, cfg, epochs=2, rows=BARE_ROWS)
    finally:
        torch.set_num_threads(threads)
    epoch, held = read_epochs(run_dir)[-1], min(BARE_ROWS, parquet_rows(data_dir / "train"))
    return (f"{rate:,.0f} samples/s on {cfg.num_workers} threads ({held:,} rows in memory, 2nd epoch); "
            f"Ray Train's epoch at {epoch['train_samples_per_s'] / rate:.2f}x of it")


def run_size(rows: int, work: Path, block_rows: int) -> list[dict]:
    from tamor.platform.evaluate import evaluate_checkpoint
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.run_files import read_epochs
    from tamor.platform.schema import load_schema
    from tamor.platform.train import TrainConfig, train
    from tamor.platform.world import WorldConfig

    results: list[dict] = []
    baseline = memory_in_use_mib()

    def stage(name: str, fn):
        start = time.perf_counter()
        with MemorySampler() as sampler:
            figure = fn()
        results.append({
            "rows": rows, "stage": name, "seconds": round(time.perf_counter() - start, 1),
            "driver_peak_rss_mib": round(_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), 0),
            "ray_worker_peak_rss_mib": round(ray_worker_peaks_mib(), 0),
            "machine_peak_in_use_mib": round(sampler.peak, 0), "machine_before_mib": round(baseline, 0), "figure": figure,
        })
        print(json.dumps(results[-1]), flush=True)

    world = WorldConfig(rows=rows, seed=0, rows_per_block=block_rows)
    if (work / "synthetic" / "logs").exists():  # a rerun in a --work-dir keeps this size's logs, not what came of them
        for done in ("data", "train"):  # preprocess refuses a written dataset; a run named "scale" would resume
            shutil.rmtree(work / done, ignore_errors=True)
    else:
        stage("generate", lambda: f"{generate(world, work / 'synthetic'):,} rows")
    stage("preprocess", lambda: str(preprocess(str(work / "synthetic" / "logs"), load_schema("synthetic"), work / "data").rows_out))
    cfg = TrainConfig(data_dir=str(work / "data"), epochs=1, num_workers=2, batch_size=4096, lr=3e-3, storage_path=str(work / "train"),
                      name="scale", wandb="disabled", cache_data="never")
    summary: dict = {}

    def fit() -> str:
        summary.update(train(cfg))
        epoch = read_epochs(summary["run_dir"])[-1]
        per_worker = ", ".join(f"rank {w['rank']} {w['peak_rss_mb']:.0f} MiB" for w in epoch["workers"])
        return f"val AUC {epoch['val_auc_mean']:.4f} on {epoch['val_rows']:,} rows; {epoch['train_samples_per_s']:,.0f} samples/s; {per_worker}"

    stage("train 1 epoch (2 workers)", fit)
    stage("the bare step (same threads)", lambda: bare_step(work / "data", cfg, summary["run_dir"]))

    def evaluate() -> str:
        metrics = evaluate_checkpoint(summary["best_checkpoint"], work / "data")
        return f"test AUC {metrics[metrics['slice'] == 'overall']['auc'].mean():.4f}"

    stage("evaluate (test split)", evaluate)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    ap.add_argument("--block-rows", type=int, default=500_000)
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where data goes (default: a temporary directory, removed after); logs generated there before are reused")
    ap.add_argument("--out", type=Path, default=Path("runs/scale.json"))
    args = ap.parse_args()

    from tamor.platform.ray_env import init_ray

    init_ray(num_cpus=2, log_dir=Path(tempfile.mkdtemp(prefix="scale-logs-")), verbose=False)
    results = []
    for rows in args.rows:
        work = (args.work_dir or Path(tempfile.mkdtemp(prefix="scale-"))) / f"rows-{rows}"
        results += run_size(rows, work, args.block_rows)
        if args.work_dir is None:
            shutil.rmtree(work.parent, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(pd.DataFrame(results).drop(columns=["machine_before_mib"]).to_markdown(index=False))


if __name__ == "__main__":
    main()
