"""`tamor train`: data-parallel training with Ray Train's ``TorchTrainer`` fed by Ray Data shards.

One entry point runs locally and under ``ray job submit``. Checkpoints every epoch (model, optimiser,
config, feature spec) keep the best ``keep`` by the validation metric; a worker failure restarts
from the latest checkpoint (``FailureConfig``); re-running with the same run name resumes it.
"""

from __future__ import annotations

import hashlib
import json
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import ray
import ray.train
import torch
from filelock import FileLock, Timeout
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.train.torch import TorchTrainer

from tamor.models.errors import TamorError
from tamor.models.factory import build_model
from tamor.models.feature_spec import FeatureSpec
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.platform.checkpoints import (
    CheckpointError,
    best_intact,
    check_resumable,
    remove_orphans,
    restore,
    resume_point,
    save_checkpoint,
    trim_epochs,
)
from tamor.platform.data_dir import DataDir
from tamor.platform.run_files import (
    DIVERGED_FILE,
    EPOCHS_FILE,
    LOCK_FILE,
    RUN_FILE,
    RUN_FORMAT,
    SUMMARY_FILE,
)
from tamor.platform.step import (
    EarlyStopping,
    EpochStats,
    Learner,
    calibrate,
    epoch_generator,
    metrics_of,
    predict_split,
    shuffled,
    train_epoch,
    validation_metrics,
    window_rows,
)
from tamor.platform.teacher import has_teacher
from tamor.platform.tracking import Tracker, resolve_mode
from tamor.platform.train_config import TrainConfig

__all__ = ["TrainConfig", "ConfigError", "TrainingDiverged", "train", "build_trainer", "train_loop_per_worker", "predict_split"]



class ConfigError(TamorError):
    """A training config that does not fit the data, or a run name already taken by another run."""


class TrainingDiverged(TamorError):
    """The training loss became NaN or infinite (usually a learning rate too high)."""


# What may change when a run is resumed (train longer, on other workers); anything else is another run.
RESUMABLE = {"epochs", "patience", "max_failures", "num_workers", "placement_strategy", "use_gpu", "cpus_per_worker", "torch_threads",
             "wandb", "wandb_project", "wandb_group", "storage_path", "name", "data_dir"}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------------------- the worker loop


class SpecCollate(NumpyBatchCollateFn):
    """Ray Data batch (dict of column arrays) → model batch (see :mod:`tamor.models.inputs`)."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return batch_from_columns(self.spec, batch)


def epoch_batches(shard, cfg: TrainConfig, epoch: int, rank: int, collate) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of training batches from a Ray Data shard, shuffled anew each epoch (:func:`~tamor.platform.step.shuffled`
    over windows of ``shuffle_buffer`` rows, each collated once), or in data order with ``shuffle_buffer`` 0."""
    if not cfg.shuffle_buffer:
        return shard.iter_torch_batches(batch_size=cfg.batch_size, collate_fn=collate, prefetch_batches=2)
    windows = shard.iter_torch_batches(batch_size=window_rows(cfg.batch_size, cfg.shuffle_buffer), collate_fn=collate, prefetch_batches=1)
    return shuffled(windows, cfg.batch_size, epoch_generator(cfg.seed, epoch, rank))


@dataclass
class WorkerRun:
    """What a worker carries from epoch to epoch: the learner, the stopping rule, where to start, the tracker."""

    cfg: TrainConfig
    run_dir: Path
    spec: FeatureSpec
    learner: Learner
    stopping: EarlyStopping
    start_epoch: int
    tracker: Tracker
    rank: int
    world: int


def start_worker(config: dict) -> WorkerRun:
    """Seed, build the model and its learner, and restore them from Ray Train's checkpoint (a recovery after a
    failure, or an explicit resume)."""
    cfg, run_dir = TrainConfig.model_validate({k: v for k, v in config.items() if k != "run_dir"}), Path(config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    data = DataDir(cfg.data_dir)
    spec = data.spec()
    core = build_model(cfg.model, spec, data.encoder())
    # a dataset may leave parts of a model unused (census has no item-level task for a user-specific tower)
    wrap = partial(ray.train.torch.prepare_model, parallel_strategy_kwargs={"find_unused_parameters": True})
    learner = Learner.build(core, spec, cfg, ray.train.torch.get_device(), wrap=wrap)
    stopping, start_epoch = EarlyStopping(cfg.mode, cfg.patience), 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            point = resume_point(Path(d), run_dir)
            if point is None:
                raise CheckpointError(f"checkpoint {d} is unreadable and the run has no whole one before it")
            start_epoch = restore(learner, stopping, point)
    if rank == 0:
        trim_epochs(run_dir, start_epoch)
    name = ctx.get_experiment_name()
    tracker = Tracker(rank == 0, cfg.wandb, run_dir / "wandb", cfg.wandb_project, name, cfg.model_dump(),
                      group=cfg.wandb_group or name, job_type="train")
    return WorkerRun(cfg, run_dir, spec, learner, stopping, start_epoch, tracker, rank, world)


def validate(run: WorkerRun, shard, collate) -> tuple[pd.DataFrame, list[dict]]:
    """Each worker scores its shard of the validation split; the calibration is fitted, and the metrics measured,
    on everyone's predictions."""
    batches = shard.iter_torch_batches(batch_size=4096, collate_fn=collate)
    own = predict_split(run.learner.judged, batches, run.learner.device, run.learner.amp)
    own.pop("probs")  # the calibration refitted below gives them anew: they need not cross the wire
    preds, workers = gather_predictions(own, run.world)
    return metrics_of(calibrate(run.learner.judged, preds), run.spec), workers


def epoch_report(run: WorkerRun, epoch: int, stats: EpochStats, table: pd.DataFrame, workers: list[dict]) -> dict:
    """The epoch's metrics as reported to Ray Train, logged to W&B and written to ``epochs.jsonl``."""
    metrics = {"epoch": epoch, "train_loss": stats.mean_loss, "train_samples_per_s": stats.seen * run.world / max(stats.seconds, 1e-9),
               **validation_metrics(table, run.spec, run.cfg.objective),
               "val_rows": sum(w["rows"] for w in workers), "peak_rss_mb_max": max(w["peak_rss_mb"] for w in workers)}
    run.stopping.update(metrics[run.cfg.metric])
    metrics.update({"best_" + run.cfg.metric: run.stopping.best, "stale_epochs": run.stopping.stale})
    by_tier = table[table["slice"] == "tier"]
    run.tracker.log({**metrics, **{f"val_auc_tier/{r.task}/{r.group}": float(r.auc) for r in by_tier.itertuples()}}, step=epoch)
    if run.rank == 0:
        with open(run.run_dir / EPOCHS_FILE, "a") as log:
            log.write(json.dumps({**metrics, "workers": workers}) + "\n")
    return metrics


def report(run: WorkerRun, epoch: int, metrics: dict, table: pd.DataFrame) -> None:
    """Ray Train's report, with a checkpoint from rank 0."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if run.rank == 0:
            save_checkpoint(run.learner, run.stopping, epoch, table, Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def record_divergence(run: WorkerRun, epoch: int, stats: EpochStats) -> None:
    """Where the loss stopped being finite, for the driver's error (retrying from a checkpoint would diverge again)."""
    if run.rank == 0:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / DIVERGED_FILE).write_text(json.dumps({"epoch": epoch, "step": stats.steps, "lr": run.cfg.lr}))


def train_loop_per_worker(config: dict) -> None:
    """The per-worker loop: ``config`` is :class:`TrainConfig` as a dict plus ``run_dir``."""
    run = start_worker(config)
    train_shard, valid_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("valid")
    collate = SpecCollate(run.spec)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows progress
    agree = partial(any_worker, world_size=run.world, device=run.learner.device)
    table, trained = None, False
    for epoch in range(run.start_epoch, run.cfg.epochs):
        stats = train_epoch(run.learner, epoch_batches(train_shard, run.cfg, epoch, run.rank, collate), agree)
        if stats.diverged:
            record_divergence(run, epoch, stats)
            break
        table, workers = validate(run, valid_shard, collate)
        metrics = epoch_report(run, epoch, stats, table, workers)
        report(run, epoch, metrics, table)
        trained = True
        if run.stopping.stop:
            break
    if run.rank == 0 and trained and not stats.diverged:  # a resumed, already finished run trains nothing
        run.tracker.table("val_auc_by_task_tier", table[table["slice"] != "overall"])
        run.tracker.summary({"best_" + run.cfg.metric: run.stopping.best})
    run.tracker.finish()


def gather_predictions(own: dict[str, np.ndarray], world_size: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Every worker's validation predictions (see :func:`predict_split`), concatenated in rank order, and
    per worker its rank, node, number of rows and peak RSS (MiB). Only predictions cross the wire: no
    worker ever holds the whole validation split."""
    ctx = ray.train.get_context()
    info = {"rank": ctx.get_world_rank(), "node": ray.get_runtime_context().get_node_id(),
            "rows": int(len(own["tier"])), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if world_size == 1:
        return own, [info]
    parts: list = [None] * world_size
    torch.distributed.all_gather_object(parts, (own, info))
    return {k: np.concatenate([p[0][k] for p in parts]) for k in own}, [p[1] for p in parts]


def any_worker(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every worker when ``flag`` is true on any (so all stop at the same step, no collective hangs)."""
    if world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


# ------------------------------------------------------------------------------- the driver side


# The fewest blocks one shuffle window mixes: the epoch visits blocks in a random order and mixes a window of them at a
# time, so the train split is read in blocks of shuffle_buffer / WINDOW_BLOCKS rows, however preprocessing cut its files.
WINDOW_BLOCKS = 32


def read_split(data_dir: str | Path, split: str, spec: FeatureSpec, read_cpus: float = 0.25,
               with_teacher: bool = False, block_rows: int | None = None) -> ray.data.Dataset:
    """A split's model columns (and the train split's teacher columns), in blocks of at most ``block_rows`` rows if given.
    Reads take a fractional CPU: they are I/O bound, and whole-CPU reads would starve beside fractional trainer workers
    on a 2-CPU machine."""
    path = str(DataDir(data_dir).split(split))
    blocks = {}
    if block_rows:
        files = pads.dataset(path, format="parquet")
        blocks = {"override_num_blocks": max(len(files.files), -(-files.count_rows() // block_rows))}
    columns = batch_columns(spec, with_teacher=with_teacher)
    return ray.data.read_parquet(path, num_cpus=read_cpus, **blocks).select_columns(columns)


def cached(ds: ray.data.Dataset, cfg: TrainConfig) -> ray.data.Dataset:
    """The split materialised in Ray's object store when it fits in a quarter of it (``cache_data``:
    auto), so epochs after the first read memory instead of decoding Parquet again: on a small
    machine that decoding competes with the training step for the same CPUs."""
    if cfg.cache_data == "never":
        return ds
    if cfg.cache_data == "auto":
        size = ds.count() * len(ds.columns()) * 8  # a bound: every model column is 8 bytes or fewer
        capacity = ray.cluster_resources().get("object_store_memory", 0)
        if size > 0.25 * capacity:
            return ds
    return ds.materialize()


def check_config(cfg: TrainConfig, spec: FeatureSpec) -> None:
    """Refuse, on the driver, a config that names tasks, tiers or a metric the data does not have, or
    distils from a train split without teacher columns."""
    tasks = set(spec.task_names)
    unknown = set(cfg.model.loss_weights) - tasks
    for tier, weights in (cfg.objective or {}).items():
        unknown |= set(weights) - tasks
        if tier not in spec.tiers:
            raise ConfigError(f"objective: unknown tier {tier!r}; the data's tiers are {spec.tiers}")
    if unknown:
        raise ConfigError(f"unknown task names {sorted(unknown)} in the config; the data's tasks are {spec.task_names}")
    metrics = {"val_auc_mean", "val_objective", "train_loss", *(f"val_{m}_{t}" for m in ("auc", "logloss") for t in tasks)}
    if cfg.metric not in metrics:
        raise ConfigError(f"unknown metric {cfg.metric!r}; one of {sorted(metrics)}")
    if cfg.distill > 0 and not has_teacher(DataDir(cfg.data_dir).split("train"), spec):
        raise ConfigError(f"distill {cfg.distill}: {cfg.data_dir}'s train split has no teacher columns; run `tamor preprocess` "
                          "again (with preprocess.teacher: true, the default) or train with distill 0")


def build_trainer(cfg: TrainConfig, name: str, callbacks: list | None = None,
                  loop: Callable[[dict], None] | None = None) -> TorchTrainer:
    """The ``TorchTrainer`` for ``cfg``, its run stored as ``storage_path/name``; ``loop``: the per-worker
    function (default :func:`train_loop_per_worker`)."""
    spec = DataDir(cfg.data_dir).spec()  # fail early, on the driver, when the data is missing
    check_config(cfg, spec)
    storage = Path(cfg.storage_path).resolve()
    run_dir = storage / name
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    wandb_mode = resolve_mode(cfg.wandb)
    cfg = cfg.model_copy(update={"wandb": wandb_mode, "data_dir": str(Path(cfg.data_dir).resolve())})
    return TorchTrainer(
        loop or train_loop_per_worker,
        train_loop_config={**cfg.model_dump(), "run_dir": str(run_dir)},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources,
                                               placement_strategy=cfg.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.keep, checkpoint_score_attribute=cfg.metric, checkpoint_score_order=cfg.mode
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,
        ),
        # blocks in a seeded random order (a time-split log is written in date order), rows mixed per epoch
        datasets={"train": cached(read_split(cfg.data_dir, "train", spec, with_teacher=cfg.distill > 0,
                                             block_rows=cfg.shuffle_buffer // WINDOW_BLOCKS), cfg).randomize_block_order(seed=cfg.seed),
                  "valid": cached(read_split(cfg.data_dir, "valid", spec), cfg)},
        # several workers: both splits sharded, so a worker holds its part of the validation split, never all of it
        # (cut into equal parts, which leaves out fewer than num_workers rows); one worker reads them whole itself,
        # without the split coordinator actor (a process to start) that sharding puts before each split
        dataset_config=ray.train.DataConfig(datasets_to_split=["train", "valid"] if cfg.num_workers > 1 else []),
    )


def run_identity(cfg: TrainConfig) -> dict:
    """What makes a run the same run: its config (less what a resume may change) and its data."""
    data = DataDir(cfg.data_dir)
    digest = hashlib.sha256(data.stats_file.read_bytes()).hexdigest() if data.stats_file.exists() else None
    return {"config": cfg.model_dump(exclude=RESUMABLE), "data": digest}


def _flat(config: dict, prefix: str = "") -> dict:
    """``{"model": {"name": "mmoe"}}`` → ``{"model.name": "mmoe"}``: a refused resume names the fields that differ."""
    out = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def claim_run(cfg: TrainConfig, run_dir: Path) -> dict | None:
    """Record a new run's identity, or check a reused name: the same run resumes (returns its summary when
    it already finished), another run under the name is refused. Nothing of an earlier run is deleted."""
    identity = json.loads(json.dumps({"format": RUN_FORMAT, **run_identity(cfg)}, default=str))
    run_file = run_dir / RUN_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    if not run_file.exists() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise ConfigError(f"{run_dir} holds files but no {RUN_FILE}: not a tamor run to resume; choose another --name")
    try:
        with open(run_file, "x") as f:  # exclusive: of two starts, one records the run
            f.write(json.dumps(identity, indent=2))
        return None
    except FileExistsError:
        earlier = json.loads(run_file.read_text())
    if earlier.get("format") != RUN_FORMAT:
        raise ConfigError(f"{run_dir} holds a run recorded in run format {earlier.get('format', 1)}, and this tamor reads "
                          f"format {RUN_FORMAT}: choose another --name (its checkpoints are kept)")
    if earlier != identity:
        was, now = _flat(earlier["config"]), _flat(identity["config"])
        changed = [f"{k} (recorded {was.get(k)!r}, now {now.get(k)!r})" for k in sorted({**was, **now}) if was.get(k) != now.get(k)]
        changed += ["data"] if earlier["data"] != identity["data"] else []
        raise ConfigError(
            f"run name {run_dir.name!r} is taken by a run with other {', '.join(changed)}; resume it with the same config "
            f"and data, or choose another --name (its checkpoints in {run_dir} are kept)"
        )
    summary_file = run_dir / SUMMARY_FILE
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("stopped") == "early" or summary["last_metrics"].get("epoch", -1) + 1 >= cfg.epochs:
            return summary  # finished: a rerun of the same run has nothing to do
    return None


def hold_run(run_dir: Path) -> FileLock:
    """The run's lock, held while it trains: a second start of the same name is refused, not interleaved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"run {run_dir.name!r} is being trained by another process; wait for it or choose another --name") from None
    return lock


def train(cfg: TrainConfig, loop: Callable[[dict], None] | None = None) -> dict:
    """Fit, and return a summary: run name and directory, best checkpoint and its metrics.

    Reusing a run name resumes that run from its latest checkpoint when config and data match, and is
    refused otherwise, as is a start while another process trains it. A loss that turns non-finite stops
    the run with :class:`TrainingDiverged`. ``loop`` replaces :func:`train_loop_per_worker` (tests inject faults so).
    """
    name = cfg.name or unique_name(cfg.model.name)
    run_dir = Path(cfg.storage_path).resolve() / name
    with hold_run(run_dir):
        finished = claim_run(cfg, run_dir)
        if finished is not None:
            return finished
        (run_dir / DIVERGED_FILE).unlink(missing_ok=True)
        check_resumable(run_dir)
        result = build_trainer(cfg, name, loop=loop).fit()
        return summarise(cfg, name, run_dir, result)


def summarise(cfg: TrainConfig, name: str, run_dir: Path, result: ray.train.Result) -> dict:
    """The finished run's summary (written to ``summary.json``), or :class:`TrainingDiverged`."""
    if (run_dir / DIVERGED_FILE).exists():
        where = json.loads((run_dir / DIVERGED_FILE).read_text())
        raise TrainingDiverged(
            f"loss diverged at epoch {where['epoch']} step {where['step']} (lr {cfg.lr:g}): lower the learning rate (--lr)"
        )
    kept = [(c.path, m) for c, m in result.best_checkpoints]
    best_path, best_metrics = best_intact(kept, cfg.metric, cfg.mode)
    remove_orphans(run_dir, {p for p, _ in kept} | ({result.checkpoint.path} if result.checkpoint else set()))
    summary = {
        "name": name,
        "run_dir": str(run_dir),
        "best_checkpoint": best_path,
        "best_metrics": {k: v for k, v in best_metrics.items() if isinstance(v, (int, float))},
        "last_metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "config": cfg.model_dump(),
        "stopped": "early" if result.metrics and result.metrics.get("stale_epochs", 0) >= cfg.patience else "epochs",
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return summary
