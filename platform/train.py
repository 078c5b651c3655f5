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
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import ray
import ray.train
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.train.torch import TorchTrainer
from torch.optim.swa_utils import AveragedModel

from tamor.models.config import ModelConfig
from tamor.models.errors import TamorError
from tamor.models.factory import MODEL_FILE, build_model, model_state
from tamor.models.feature_spec import FeatureSpec
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.models.loss import MultiTaskLoss
from tamor.models.metrics import evaluate_predictions
from tamor.platform.data_dir import DataDir
from tamor.platform.teacher import has_teacher
from tamor.platform.tracking import Tracker, WandbMode, resolve_mode

TRAINING_STATE_FILE = "training_state.pt"
EMA_STEADY = 100_000  # updates a checkpoint without the count is taken to hold: past the decay's warm-up


class TrainConfig(BaseModel):
    """Everything a training run needs; loadable from YAML, overridable from the CLI."""

    model_config = ConfigDict(extra="forbid")
    data_dir: str = "runs/synthetic/data"
    model: ModelConfig = Field(default_factory=ModelConfig)
    # The recipe chosen on real logs by bench/peers.py (census): Adam(W) at 1e-3, batches of 1024, up to
    # 30 epochs stopped after 3 without a better validation AUC, a fresh shuffle every epoch, targets mixed with
    # the tree teacher's, the weights' moving average validated and kept.
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    distill: float = Field(
        0.5, ge=0, le=1, description="α: train on (1 − α) · label + α · the out-of-fold tree teacher's probability "
        "(the train split's teacher_<task> columns, written by `tamor preprocess`); 0: the labels alone"
    )
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="an exponential moving average of the weights, updated every step (its decay "
        "warms up to this over the first ~1,000 steps), is what is validated, checkpointed and served; 0: the raw weights"
    )
    num_workers: int = Field(1, ge=1)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = Field(
        "PACK", description="where the workers go: STRICT_SPREAD puts each on its own node (a multi-node cluster)"
    )
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional, so Ray Data keeps a CPU on 2-CPU machines")
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads per worker (Ray sets 1 for fractional CPUs; more can pay on CPU)"
    )
    shuffle_buffer: int = Field(100_000, ge=0, description="rows mixed by the per-epoch local shuffle (0: data order)")
    cache_data: Literal["auto", "always", "never"] = Field(
        "auto", description="materialise the train split in the object store (auto: when it fits in a quarter of it)"
    )
    storage_path: str = "runs/train"
    name: str | None = None  # None: a unique name (reusing a name resumes that run)
    metric: str = "val_auc_mean"
    mode: Literal["max", "min"] = "max"
    keep: int = Field(2, ge=1, description="best checkpoints kept")
    patience: int = Field(3, ge=1, description="epochs without improvement before early stopping")
    max_failures: int = Field(2, ge=0, description="worker failures recovered from the latest checkpoint")
    seed: int = 0
    wandb: WandbMode = "offline"
    wandb_project: str = "tamor"
    wandb_group: str | None = Field(None, description="W&B group shared by the runs of one demo or job (default: the run name)")
    objective: dict[str, dict[str, float]] | None = Field(
        None,
        description="business objective: {tier: {task: weight}} over validation AUCs per tier; "
        "reported as val_objective (the mean AUC over tasks when unset)",
    )
    fail_at_epoch: int | None = Field(None, description="testing: a worker raises once at this epoch")


class ConfigError(TamorError):
    """A training config that does not fit the data, or a run name already taken by another run."""


class TrainingDiverged(TamorError):
    """The training loss became NaN or infinite (usually a learning rate too high)."""


RUN_FILE = "run.json"  # the config and data fingerprint a run was started with: what a resume must match
DIVERGED_FILE = "diverged.json"
# What may change when a run is resumed (train longer, on other workers); anything else is another run.
RESUMABLE = {"epochs", "patience", "max_failures", "num_workers", "placement_strategy", "use_gpu", "cpus_per_worker", "torch_threads",
             "wandb", "wandb_project", "wandb_group", "fail_at_epoch", "storage_path", "name", "data_dir"}
# Fields added after runs were first recorded, with the value a run recorded before them trained with
# (where that is not the field's default): such a run resumes with that value, e.g. `--distill 0`.
BEFORE_ADDED = {"distill": 0.0}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------------------- the worker loop


class SpecCollate(NumpyBatchCollateFn):
    """Ray Data batch (dict of column arrays) → model batch (see :mod:`tamor.models.inputs`)."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return batch_from_columns(self.spec, batch)


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (``update_parameters(model)`` after every step),
    or None when ``decay`` is 0. It smooths the step-to-step noise of the last epochs, which moves small
    tiers' AUC most. Its decay warms up (:func:`warming_ema`), so a short run's average follows its recent
    weights instead of holding on to its first steps'."""
    if decay == 0:
        return None
    # buffers too: a BatchNorm's running statistics must belong to the averaged weights, not the raw ones
    # (constant buffers such as bin edges stay what they are)
    return AveragedModel(model, multi_avg_fn=warming_ema(decay), use_buffers=True)


def warming_ema(decay: float):
    """``multi_avg_fn`` of :class:`AveragedModel`: after ``n`` updates the average keeps min(decay, (1 + n) / (10 + n))
    of itself (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): 0.18 at the second update, 0.9
    at the 81st, ``decay`` 0.99 from the 891st on."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = num_averaged.double()  # a tensor on the weights' device: no sync with the host
        keep = torch.clamp((1 + n) / (10 + n), max=decay)
        for a, c in zip(averaged, current):
            if a.is_floating_point():  # what has not changed stays: a constant ±inf bin edge would become inf − inf = NaN
                a.copy_(torch.where(a == c, c, a.lerp(c, (1 - keep).to(a.dtype))))
            else:  # a count, such as BatchNorm's num_batches_tracked
                a.copy_(c)

    return update


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def predict_split(model, batches, device: torch.device, amp: bool) -> dict[str, np.ndarray]:
    """Run ``model`` over batches: probabilities, labels, masks ``[N, T]``, tier and scenario ``[N]``."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("probs", "labels", "label_mask", "tier", "scenario")}
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for batch in batches:
            batch = _to(batch, device)
            logits = model(batch)
            probs = torch.sigmoid(torch.stack([logits[t] for t in model_tasks(model)], dim=1).float())
            parts["probs"].append(probs.cpu().numpy())
            for k in ("labels", "label_mask", "tier", "scenario"):
                parts[k].append(batch[k].cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def model_tasks(model) -> list[str]:
    return getattr(model, "module", model).tasks


def _mean_auc(metrics: pd.DataFrame) -> float:
    overall = metrics[metrics["slice"] == "overall"]["auc"]
    return float(overall.mean()) if overall.notna().any() else float("nan")


def objective_value(metrics: pd.DataFrame, weights: dict[str, dict[str, float]] | None) -> float:
    """Σ w[tier][task] · AUC(task, tier) / Σ w over the cells that have an AUC; mean AUC if no weights."""
    if not weights:
        return _mean_auc(metrics)
    auc = metrics[metrics["slice"] == "tier"].set_index(["group", "task"])["auc"]
    cells = [(w, auc.get((tier, task), float("nan"))) for tier, tasks in weights.items() for task, w in tasks.items()]
    cells = [(w, a) for w, a in cells if np.isfinite(a)]
    total = sum(w for w, _ in cells)
    return float(sum(w * a for w, a in cells) / total) if total > 0 else float("nan")


def epoch_batches(shard, cfg: TrainConfig, epoch: int, rank: int, collate):
    """One epoch of training batches, shuffled anew each epoch (seeded by seed, epoch and rank).

    The shard is read in windows of ``shuffle_buffer`` rows, each collated once into tensors, permuted
    with a seeded ``randperm`` and cut into batches: the same mixing as a local shuffle buffer of
    that size, at the cost of one gather per window instead of Ray Data's per-batch shuffling and
    collation (which held Ray Train below a bare loop's speed).
    """
    if not cfg.shuffle_buffer:
        yield from shard.iter_torch_batches(batch_size=cfg.batch_size, collate_fn=collate, prefetch_batches=2)
        return
    window = max(cfg.batch_size, cfg.shuffle_buffer // cfg.batch_size * cfg.batch_size)
    generator = torch.Generator().manual_seed((cfg.seed * 1009 + epoch) * 101 + rank)
    for chunk in shard.iter_torch_batches(batch_size=window, collate_fn=collate, prefetch_batches=1):
        n = len(next(iter(chunk.values())))
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            rows = order[start : start + cfg.batch_size]
            yield {k: v[rows] for k, v in chunk.items()}


def train_loop_per_worker(config: dict) -> None:
    """The per-worker loop: config is :class:`TrainConfig` as a dict plus ``run_dir``."""
    cfg = TrainConfig.model_validate({k: v for k, v in config.items() if k != "run_dir"})
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    data = DataDir(cfg.data_dir)
    spec = data.spec()
    torch.manual_seed(cfg.seed + rank)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()
    amp = device.type == "cuda"

    model = build_model(cfg.model, spec, data.encoder())
    optimizer_state, start_epoch, best, stale, saved = None, 0, None, 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # recovery after a failure, or an explicit resume
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / MODEL_FILE, weights_only=True)["state_dict"]
            state = torch.load(Path(d) / TRAINING_STATE_FILE, weights_only=True)
        model.load_state_dict(state.get("raw_state_dict", saved))  # with an average, the checkpoint's model is the average
        optimizer_state, start_epoch, best, stale = state["optimizer"], state["epoch"] + 1, state["best"], state["stale"]
    core = model
    # a dataset may leave parts of a model unused (census has no item-level task for a user-specific tower)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    average = weight_average(core, cfg.ema_decay)  # on the device, like core; the same on every worker (DDP keeps them equal)
    if average is not None and saved is not None:  # go on averaging from the saved average, not restart from the raw weights
        average.module.load_state_dict(saved)
        average.n_averaged.fill_(state.get("ema_updates", EMA_STEADY))
    judged = average.module if average is not None else model  # what is validated and checkpointed
    loss_fn = MultiTaskLoss(spec, cfg.model.loss_weights, cfg.distill).to(device)
    optimizer = torch.optim.AdamW(core.parameter_groups(cfg.weight_decay), lr=cfg.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)

    name = ctx.get_experiment_name()
    tracker = Tracker(rank == 0, cfg.wandb, Path(config["run_dir"]) / "wandb", cfg.wandb_project, name, cfg.model_dump(),
                      group=cfg.wandb_group or name, job_type="train")
    train_shard = ray.train.get_dataset_shard("train")
    valid_shard = ray.train.get_dataset_shard("valid")
    collate = SpecCollate(spec)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows progress
    sign = 1.0 if cfg.mode == "max" else -1.0
    epoch, diverged = start_epoch - 1, False

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.fail_at_epoch == epoch and rank == 0:
            marker = Path(config["run_dir"]) / f".failed_at_{epoch}"
            if not marker.exists():  # fail once, so the recovered run goes on
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"injected worker failure at epoch {epoch}")
        model.train()
        start, seen, total_loss, steps = time.perf_counter(), 0, 0.0, 0
        diverged = False
        for batch in epoch_batches(train_shard, cfg, epoch, rank, collate):
            batch = _to(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                total, _ = loss_fn(model(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if average is not None:
                average.update_parameters(core)
            if _any_worker(not torch.isfinite(total.detach()).item(), ctx.get_world_size(), device):
                diverged = True
                break
            seen += len(batch["tier"])
            total_loss += float(total.detach())
            steps += 1
        if diverged:  # stop: retrying from a checkpoint would diverge again, and NaN scores break every metric
            if rank == 0:
                Path(config["run_dir"]).mkdir(parents=True, exist_ok=True)
                (Path(config["run_dir"]) / DIVERGED_FILE).write_text(json.dumps({"epoch": epoch, "step": steps, "lr": cfg.lr}))
            break
        elapsed = time.perf_counter() - start
        # each worker scores its shard of the validation split; the metrics come from everyone's predictions
        own = predict_split(judged, valid_shard.iter_torch_batches(batch_size=4096, collate_fn=collate), device, amp)
        preds, workers = gather_predictions(own, ctx.get_world_size())
        metrics_table = evaluate_predictions(spec, preds["probs"], preds["labels"], preds["label_mask"], preds["tier"], preds["scenario"])
        del preds
        overall = metrics_table[metrics_table["slice"] == "overall"].set_index("task")
        metrics = {
            "epoch": epoch,
            "train_loss": total_loss / max(steps, 1),
            "train_samples_per_s": seen * ctx.get_world_size() / max(elapsed, 1e-9),
            "val_auc_mean": _mean_auc(metrics_table),
            "val_objective": objective_value(metrics_table, cfg.objective),
            **{f"val_auc_{t}": float(overall.loc[t, "auc"]) for t in spec.task_names},
            **{f"val_logloss_{t}": float(overall.loc[t, "logloss"]) for t in spec.task_names},
            "val_rows": sum(w["rows"] for w in workers),
            "peak_rss_mb_max": max(w["peak_rss_mb"] for w in workers),
        }
        by_tier = metrics_table[metrics_table["slice"] == "tier"]
        series = {f"val_auc_tier/{r.task}/{r.group}": float(r.auc) for r in by_tier.itertuples()}  # one W&B series per cell
        value = metrics[cfg.metric]
        improved = best is None or sign * value > sign * best
        best, stale = (value, 0) if improved else (best, stale + 1)
        metrics["best_" + cfg.metric] = best
        metrics["stale_epochs"] = stale
        tracker.log({**metrics, **series}, step=epoch)
        if rank == 0:  # a plain per-epoch log beside the checkpoints, for people and for resume checks
            with open(Path(config["run_dir"]) / "epochs.jsonl", "a") as log:
                log.write(json.dumps({**metrics, "workers": workers}) + "\n")
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save(model_state(average.module if average is not None else core), Path(tmp) / MODEL_FILE)
                training_state = {"optimizer": optimizer.state_dict(), "epoch": epoch, "best": best, "stale": stale}
                if average is not None:  # the raw weights training goes on from, and how many steps the average holds
                    training_state["raw_state_dict"] = {k: v.detach().cpu() for k, v in core.state_dict().items()}
                    training_state["ema_updates"] = int(average.n_averaged)
                torch.save(training_state, Path(tmp) / TRAINING_STATE_FILE)
                metrics_table.to_csv(Path(tmp) / "valid_metrics.csv", index=False)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if stale >= cfg.patience:
            break
    if rank == 0 and start_epoch < epoch + 1 and not diverged:  # a resumed, already finished run trains nothing
        tier_table = metrics_table[metrics_table["slice"] != "overall"]
        tracker.table("val_auc_by_task_tier", tier_table)
        tracker.summary({"best_" + cfg.metric: best})
    tracker.finish()


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


def _any_worker(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every worker when ``flag`` is true on any (so all stop at the same step, no collective hangs)."""
    if world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


# ------------------------------------------------------------------------------- the driver side


def read_split(data_dir: str | Path, split: str, spec: FeatureSpec, read_cpus: float = 0.25,
               with_teacher: bool = False) -> ray.data.Dataset:
    """A split's model columns (and the train split's teacher columns). Reads take a fractional CPU: they are
    I/O bound, and whole-CPU reads would starve beside fractional trainer workers on a 2-CPU machine."""
    columns = batch_columns(spec, with_teacher=with_teacher)
    return ray.data.read_parquet(str(DataDir(data_dir).split(split)), num_cpus=read_cpus).select_columns(columns)


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


def build_trainer(cfg: TrainConfig, name: str, callbacks: list | None = None) -> TorchTrainer:
    """The ``TorchTrainer`` for ``cfg``, its run stored as ``storage_path/name``."""
    spec = DataDir(cfg.data_dir).spec()  # fail early, on the driver, when the data is missing
    check_config(cfg, spec)
    storage = Path(cfg.storage_path).resolve()
    run_dir = storage / name
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else bool(ray.cluster_resources().get("GPU", 0))
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    wandb_mode = resolve_mode(cfg.wandb)
    cfg = cfg.model_copy(update={"wandb": wandb_mode, "data_dir": str(Path(cfg.data_dir).resolve())})
    env = {"WANDB_MODE": wandb_mode, "WANDB_DIR": str(run_dir / "wandb"), "WANDB_SILENT": "true"}
    return TorchTrainer(
        train_loop_per_worker,
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
            worker_runtime_env={"env_vars": env},
            callbacks=callbacks,
        ),
        # blocks in a seeded random order (a time-split log is written in date order), rows mixed per epoch
        datasets={"train": cached(read_split(cfg.data_dir, "train", spec, with_teacher=cfg.distill > 0), cfg).randomize_block_order(seed=cfg.seed),
                  "valid": cached(read_split(cfg.data_dir, "valid", spec), cfg)},
        # both splits sharded: a worker holds its part of the validation split, never all of it (with
        # several workers the split is cut into equal parts, which leaves out fewer than num_workers rows)
        dataset_config=ray.train.DataConfig(datasets_to_split=["train", "valid"]),
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
    identity = run_identity(cfg)
    run_file = run_dir / RUN_FILE
    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(identity, indent=2, default=str))
        return None
    if not run_file.exists():
        raise ConfigError(f"{run_dir} holds a run this version cannot check for a resume: choose another --name")
    earlier = json.loads(run_file.read_text())
    missing = identity["config"].keys() - earlier["config"].keys()  # recorded before the field existed
    if missing:  # the defaults as the record has them (JSON; also a field with a default_factory)
        defaults = json.loads(json.dumps(TrainConfig().model_dump(exclude=RESUMABLE), default=str))
        earlier["config"].update({key: BEFORE_ADDED.get(key, defaults[key]) for key in missing})
    if earlier != json.loads(json.dumps(identity, default=str)):
        was, now = _flat(earlier["config"]), _flat(json.loads(json.dumps(identity["config"], default=str)))
        changed = [f"{k} (recorded {was.get(k)!r}, now {now.get(k)!r})"  # e.g. a default changed since it was recorded
                   for k in sorted({**was, **now}) if was.get(k) != now.get(k)]
        changed += ["data"] if earlier["data"] != identity["data"] else []
        raise ConfigError(
            f"run name {run_dir.name!r} is taken by a run with other {', '.join(changed)}; resume it with the same config "
            f"and data, or choose another --name (its checkpoints in {run_dir} are kept)"
        )
    summary_file = run_dir / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("stopped") == "early" or summary["last_metrics"].get("epoch", -1) + 1 >= cfg.epochs:
            return summary  # finished: a rerun of the same run has nothing to do
    return None


def train(cfg: TrainConfig) -> dict:
    """Fit, and return a summary: run name and directory, best checkpoint and its metrics.

    Reusing a run name resumes that run from its latest checkpoint when config and data match, and is
    refused otherwise. A loss that turns non-finite stops the run with :class:`TrainingDiverged`.
    """
    name = cfg.name or unique_name(cfg.model.name)
    run_dir = Path(cfg.storage_path).resolve() / name
    finished = claim_run(cfg, run_dir)
    if finished is not None:
        return finished
    (run_dir / DIVERGED_FILE).unlink(missing_ok=True)
    result = build_trainer(cfg, name).fit()
    if (run_dir / DIVERGED_FILE).exists():
        where = json.loads((run_dir / DIVERGED_FILE).read_text())
        raise TrainingDiverged(
            f"loss diverged at epoch {where['epoch']} step {where['step']} (lr {cfg.lr:g}): lower the learning rate (--lr)"
        )
    best_ckpt = result.get_best_checkpoint(cfg.metric, cfg.mode)
    best_metrics = next(m for c, m in result.best_checkpoints if c.path == best_ckpt.path)
    summary = {
        "name": name,
        "run_dir": str(run_dir),
        "best_checkpoint": best_ckpt.path,
        "best_metrics": {k: v for k, v in best_metrics.items() if isinstance(v, (int, float))},
        "last_metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        "config": cfg.model_dump(),
        "stopped": "early" if result.metrics and result.metrics.get("stale_epochs", 0) >= cfg.patience else "epochs",
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
