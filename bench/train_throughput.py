"""Steady-state training throughput: `tamor train` (Ray Train fed by Ray Data) vs the same step on tensors
already in memory, on the same model, data, recipe and batch size, in one run.

    python bench/train_throughput.py --rows 500000 --epochs 3
    python bench/train_throughput.py --rows 4000000 --batch-size 4096 --gpu    # on a GPU machine

Both sides run :func:`tamor.platform.step.train_epoch` with the same learner (AdamW with the model's parameter
groups, the loss with the teacher mixed in, the moving average) and the same epoch shuffle: the ratio is what
Ray Train and Ray Data cost. Ray's figure is the mean `train_samples_per_s` of the epochs after the first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def bare_loop(data_dir: Path, cfg, epochs: int, rows: int | None = None) -> float:
    """Samples/s of the epochs after the first: :func:`train_epoch` over the train split held in memory (its first
    ``rows`` rows when given: a step's speed does not depend on how many rows follow)."""
    import pyarrow.dataset as pds

    from tamor.models.factory import build_model
    from tamor.models.feature_spec import FeatureSpec
    from tamor.models.inputs import batch_columns, batch_from_columns
    from tamor.platform.step import Learner, epoch_generator, memory_epoch, train_epoch

    spec = FeatureSpec.load(data_dir)
    device = torch.device("cuda" if cfg.use_gpu else "cpu")
    columns = batch_columns(spec, with_teacher=cfg.distill > 0)
    train = pds.dataset(data_dir / "train", format="parquet")
    frame = (train.head(rows, columns=columns) if rows else train.to_table(columns=columns)).to_pandas()
    split = batch_from_columns(spec, {c: frame[c].to_numpy() for c in frame.columns}, device=device)
    torch.manual_seed(cfg.seed)
    learner = Learner.build(build_model(cfg.model, spec), spec, cfg, device)
    rates = []
    for epoch in range(epochs):
        stats = train_epoch(learner, memory_epoch(split, cfg.batch_size, cfg.shuffle_buffer, epoch_generator(cfg.seed, epoch)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(stats.seen / stats.seconds)
    return sum(rates[1:]) / max(len(rates) - 1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--model", default="tamor")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--torch-threads", type=int, default=None, help="intra-op threads of the Ray worker")
    p.add_argument("--work-dir", default=None, help="where the data is made, or reused when already there (default: a new temp dir)")
    args = p.parse_args()
    from tamor.models.config import ModelConfig
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.ray_env import init_ray
    from tamor.platform.run_files import read_epochs
    from tamor.platform.schema import load_schema
    from tamor.platform.train import TrainConfig, train
    from tamor.platform.world import WorldConfig

    init_ray()
    root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="tamor-train-bench-"))
    if not (root / "data" / "stats.json").exists():  # a --work-dir of an earlier run keeps its data
        generate(WorldConfig(rows=args.rows, rows_per_block=250_000), root)
        preprocess(str(root / "logs"), load_schema("synthetic"), root / "data")
    cfg = TrainConfig(
        data_dir=str(root / "data"), model=ModelConfig(name=args.model), epochs=args.epochs, batch_size=args.batch_size,
        use_gpu=args.gpu, storage_path=str(root / "runs"), wandb="disabled", patience=args.epochs,
        cpus_per_worker=1.0 if args.gpu else 0.5, torch_threads=args.torch_threads,
    )
    summary = train(cfg)
    epochs = read_epochs(summary["run_dir"])
    ray_rate = sum(e["train_samples_per_s"] for e in epochs[1:]) / max(len(epochs) - 1, 1)
    torch.set_num_threads(args.torch_threads or 1)  # the worker's threads (Ray gives a fractional-CPU worker one)
    bare_rate = bare_loop(root / "data", cfg, args.epochs)
    print(f"\nmodel={args.model} rows={args.rows:,} batch={args.batch_size} device={'cuda' if args.gpu else 'cpu'} "
          f"threads per side={torch.get_num_threads()}")
    print(f"{'tamor train (Ray Train + Ray Data)':<40}{ray_rate:>14,.0f} samples/s")
    print(f"{'the same step on tensors in memory':<40}{bare_rate:>14,.0f} samples/s")
    print(f"{'ratio':<40}{ray_rate / bare_rate:>14.2f}x")


if __name__ == "__main__":
    main()
