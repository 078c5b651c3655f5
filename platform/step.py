"""One training step, the epoch around it, evaluation of a split and the stopping rule.

`tamor train` (under Ray Train), the peer benchmark, the throughput ratio and the model-step benchmark all
call these, so the recipe a benchmark chooses is the recipe users run and every ratio compares the same
work. Ray-free: a batch is a dict of tensors (:mod:`tamor.models.inputs`), wherever it came from.

Example:
    >>> import numpy as np, torch
    >>> from tamor.models.config import ModelConfig
    >>> from tamor.models.factory import build_model
    >>> from tamor.models.feature_spec import CategoricalField, FeatureSpec, TaskSpec
    >>> from tamor.models.inputs import batch_from_columns
    >>> spec = FeatureSpec(dataset="toy", categorical=[CategoricalField(name="item_id", side="item", vocab_size=20)], numeric=[],
    ...                    tiers=["new", "high"], tier_thresholds=[100.0], scenarios=["fund"],
    ...                    tasks=[TaskSpec(name="click", level="item", tiers=["new", "high"])])
    >>> rng = np.random.default_rng(0)
    >>> item = rng.integers(0, 20, 2048)
    >>> split = batch_from_columns(spec, {"f_item_id": item, "tier": rng.integers(0, 2, 2048), "scenario": np.zeros(2048),
    ...                                   "label_click": (item % 3 == 0).astype("float32"), "mask_click": np.ones(2048)})
    >>> cfg = TrainConfig(model=ModelConfig(name="mmoe", expert_dims=[8], tower_dims=[4]))
    >>> learner = Learner.build(build_model(cfg.model, spec), spec, cfg, torch.device("cpu"))
    >>> stats = train_epoch(learner, memory_epoch(split, batch_size=256, shuffle_buffer=1024, generator=epoch_generator(0, 0)))
    >>> stats.steps, stats.seen, stats.diverged
    (8, 2048, False)
    >>> table = evaluate_split(learner.judged, [split], spec, learner.device)
    >>> sorted(validation_metrics(table, spec))
    ['val_auc_click', 'val_auc_mean', 'val_logloss_click', 'val_objective']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.profiler import record_function

from tamor.models.calibration import Calibration, probabilities
from tamor.models.feature_spec import FeatureSpec
from tamor.models.loss import MultiTaskLoss
from tamor.models.metrics import evaluate_predictions, mean_auc
from tamor.platform.train_config import TrainConfig

Batch = dict[str, Tensor]
STEP_PHASES = ("step: forward + loss", "step: backward", "step: optimizer", "step: moving average")


# ------------------------------------------------------------------------------- the moving average


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (``update_parameters(model)`` after every step),
    or None when ``decay`` is 0. It smooths the step-to-step noise of the last epochs, which moves small
    tiers' AUC most. Its decay warms up (:func:`warming_ema`), so a short run's average follows its recent
    weights instead of holding on to its first steps'."""
    if decay == 0:
        return None
    # buffers too: a BatchNorm's running statistics must belong to the averaged weights, not the raw ones
    return AveragedModel(model, multi_avg_fn=warming_ema(decay), use_buffers=True)


def warming_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    """``multi_avg_fn`` of :class:`AveragedModel`: after ``n`` updates the average keeps min(decay, (1 + n) / (10 + n))
    of itself (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``): 0.18 at the second update, 0.9
    at the 81st, ``decay`` 0.99 from the 891st on."""

    guarded: set[int] | None = None  # tensors not all finite at the first update, such as a constant ±inf bin edge

    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        nonlocal guarded
        n = num_averaged.double()  # a tensor on the weights' device: no sync with the host
        keep = torch.clamp((1 + n) / (10 + n), max=decay)
        if guarded is None:  # once: the only host sync
            guarded = {i for i, c in enumerate(current) if c.is_floating_point() and not bool(c.isfinite().all())}
        step = {dtype: (1 - keep).to(dtype) for dtype in {a.dtype for a in averaged if a.is_floating_point()}}
        for i, (a, c) in enumerate(zip(averaged, current)):
            if not a.is_floating_point():  # a count, such as BatchNorm's num_batches_tracked
                a.copy_(c)
            elif i in guarded:  # what has not changed stays: inf − inf would be NaN
                a.copy_(torch.where(a == c, c, a.lerp(c, step[a.dtype])))
            else:  # one in-place operation a tensor: the same numbers, a quarter of the calls
                a.lerp_(c, step[a.dtype])

    return update


# ------------------------------------------------------------------------------- the step


def to_device(batch: Mapping[str, Tensor], device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The model's own groups (TAMOR decays its tier-aware part more); one group for a foreign model."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups(weight_decay)
    return [{"params": list(model.parameters()), "weight_decay": weight_decay}]


@dataclass
class Learner:
    """A model in training: what steps (``model``, DDP-wrapped under Ray Train), the bare module (``core``),
    its optimiser, loss and moving average. Build one with :meth:`build`."""

    model: nn.Module
    core: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: MultiTaskLoss
    average: AveragedModel | None
    device: torch.device

    @classmethod
    def build(cls, core: nn.Module, spec: FeatureSpec, cfg: TrainConfig, device: torch.device,
              wrap: Callable[[nn.Module], nn.Module] | None = None) -> Learner:
        """``core`` moved to ``device`` and trained by ``cfg``'s recipe: AdamW (lr, weight decay), the loss with
        the teacher mixed in by ``distill``, the moving average at ``ema_decay``; ``wrap`` (e.g. Ray Train's
        ``prepare_model``) gives the module that steps."""
        core = core.to(device)
        model = wrap(core) if wrap else core
        # fused: one kernel for every parameter, on CPUs too, where the default loops over them one by one
        optimizer = torch.optim.AdamW(parameter_groups(core, cfg.weight_decay), lr=cfg.lr, fused=True)
        loss_fn = MultiTaskLoss(spec, cfg.model.loss_weights, cfg.distill).to(device)
        return cls(model, core, optimizer, loss_fn, weight_average(core, cfg.ema_decay), device)

    @property
    def amp(self) -> bool:
        """bf16 autocast on GPUs."""
        return self.device.type == "cuda"

    @property
    def judged(self) -> nn.Module:
        """What is validated, checkpointed and served: the moving average when there is one."""
        return self.average.module if self.average is not None else self.core


def train_step(learner: Learner, batch: Mapping[str, Tensor]) -> Tensor:
    """Forward, the multi-task loss, backward, the optimiser's step and the moving average's update on one
    batch (``[B, ...]`` tensors); returns the loss, detached (a 0-d tensor on the device)."""
    # each phase a named range, so torch.profiler (bench/model_step.py --profile) can split the step's time
    with record_function(STEP_PHASES[0]):
        batch = to_device(batch, learner.device)
        with torch.autocast(learner.device.type, dtype=torch.bfloat16, enabled=learner.amp):
            total, _ = learner.loss_fn(learner.model(batch), batch)
    with record_function(STEP_PHASES[1]):
        learner.optimizer.zero_grad(set_to_none=True)
        total.backward()
    with record_function(STEP_PHASES[2]):
        learner.optimizer.step()
    if learner.average is not None:
        with record_function(STEP_PHASES[3]):
            learner.average.update_parameters(learner.core)
    return total.detach()


@dataclass
class EpochStats:
    """What one epoch of :func:`train_epoch` did: rows, steps, the summed loss, seconds, and whether it diverged."""

    seen: int = 0
    steps: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    diverged: bool = False

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)


def train_epoch(learner: Learner, batches: Iterable[Mapping[str, Tensor]],
                agree: Callable[[bool], bool] = lambda flag: flag) -> EpochStats:
    """:func:`train_step` over ``batches``; stops at the first step whose loss is not finite (``agree`` makes
    every data-parallel worker stop at the same step, so no collective hangs)."""
    learner.model.train()
    stats, start = EpochStats(), time.perf_counter()
    for batch in batches:
        loss = train_step(learner, batch)
        if agree(not bool(torch.isfinite(loss))):
            stats.diverged = True
            break
        stats.seen += rows_in(batch)
        stats.steps += 1
        stats.loss_sum += float(loss)
    stats.seconds = time.perf_counter() - start
    return stats


# ------------------------------------------------------------------------------- the epoch's shuffle


def rows_in(batch: Mapping[str, Tensor]) -> int:
    return len(next(iter(batch.values())))


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The epoch's random order, a new one every epoch and worker, the same for the same run."""
    return torch.Generator().manual_seed((seed * 1009 + epoch) * 101 + rank)


def window_rows(batch_size: int, shuffle_buffer: int) -> int:
    """Rows mixed together: ``shuffle_buffer`` rounded down to whole batches (at least one)."""
    return max(batch_size, shuffle_buffer // batch_size * batch_size)


def shuffled(windows: Iterable[Mapping[str, Tensor]], batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows drawn from each window (a dict of ``[W, ...]`` tensors) in a random order:
    a local shuffle buffer of the window's size, at the cost of one gather per batch."""
    for chunk in windows:
        n = rows_in(chunk)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            yield {k: v[rows] for k, v in chunk.items()}


def in_memory_windows(split: Mapping[str, Tensor], window: int, generator: torch.Generator) -> Iterator[Batch]:
    """A split already in memory cut into windows of ``window`` rows, visited in a random order: what Ray Data's
    randomized block order and windowed reads give `tamor train`."""
    n = rows_in(split)
    for start in torch.randperm(-(-n // window), generator=generator).tolist():
        yield {k: v[start * window : (start + 1) * window] for k, v in split.items()}


def memory_epoch(split: Mapping[str, Tensor], batch_size: int, shuffle_buffer: int, generator: torch.Generator) -> Iterator[Batch]:
    """One epoch over a split held in memory, shuffled as `tamor train` shuffles its shard (data order with
    ``shuffle_buffer`` 0)."""
    if not shuffle_buffer:
        return in_order(split, batch_size)
    return shuffled(in_memory_windows(split, window_rows(batch_size, shuffle_buffer), generator), batch_size, generator)


def in_order(split: Mapping[str, Tensor], size: int) -> Iterator[Batch]:
    """A split in memory in batches of ``size`` rows, in order (for evaluation)."""
    n = rows_in(split)
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in split.items()}


# ------------------------------------------------------------------------------- evaluation


def batch_predictions(model: nn.Module, batches: Iterable[Mapping[str, Tensor]], device: torch.device,
                      amp: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """Run ``model`` over batches, yielding per batch: logits, probabilities (through the model's calibration, if
    any), labels and masks ``[B, T]``, tier and scenario ``[B]``."""
    core = getattr(model, "module", model)
    tasks, calibration = core.tasks, getattr(core, "calibration", None)
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for batch in batches:
            batch = to_device(batch, device)
            out = model(batch)
            logits = torch.stack([out[t] for t in tasks], dim=1).float()
            yield {"logits": logits.cpu().numpy(), "probs": probabilities(logits, calibration).cpu().numpy(),
                   **{k: batch[k].cpu().numpy() for k in ("labels", "label_mask", "tier", "scenario")}}


def predict_split(model: nn.Module, batches: Iterable[Mapping[str, Tensor]], device: torch.device,
                  amp: bool = False) -> dict[str, np.ndarray]:
    """Every batch's :func:`batch_predictions`, concatenated: ``[N, T]`` and ``[N]``."""
    parts = list(batch_predictions(model, batches, device, amp))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("logits", "probs", "labels", "label_mask", "tier", "scenario")}


def calibrate(model: nn.Module, preds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fit ``model``'s calibration on its validation predictions (:func:`predict_split`'s logits, labels and masks,
    every worker's) and return them with the calibrated probabilities: what training does after every epoch,
    before it measures and checkpoints."""
    core = getattr(model, "module", model)
    core.calibration = Calibration.fit(core.tasks, preds["logits"], preds["labels"], preds["label_mask"])
    return {**preds, "probs": probabilities(torch.from_numpy(preds["logits"]), core.calibration).numpy()}


def metrics_of(preds: Mapping[str, np.ndarray], spec: FeatureSpec) -> pd.DataFrame:
    """The metrics table (per task × overall / tier / scenario) of :func:`predict_split`'s output."""
    return evaluate_predictions(spec, preds["probs"], preds["labels"], preds["label_mask"], preds["tier"], preds["scenario"])


def evaluate_split(model: nn.Module, batches: Iterable[Mapping[str, Tensor]], spec: FeatureSpec, device: torch.device,
                   amp: bool = False) -> pd.DataFrame:
    """:func:`metrics_of` the predictions of ``model`` over ``batches``."""
    return metrics_of(predict_split(model, batches, device, amp), spec)


def objective_value(metrics: pd.DataFrame, weights: Mapping[str, Mapping[str, float]] | None) -> float:
    """Σ w[tier][task] · AUC(task, tier) / Σ w over the cells that have an AUC; the mean AUC without weights."""
    if not weights:
        return mean_auc(metrics)
    auc = metrics[metrics["slice"] == "tier"].set_index(["group", "task"])["auc"]
    cells = [(w, auc.get((tier, task), float("nan"))) for tier, tasks in weights.items() for task, w in tasks.items()]
    cells = [(w, a) for w, a in cells if np.isfinite(a)]
    total = sum(w for w, _ in cells)
    return float(sum(w * a for w, a in cells) / total) if total > 0 else float("nan")


def validation_metrics(table: pd.DataFrame, spec: FeatureSpec,
                       objective: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, float]:
    """The numbers an epoch reports and stops on: ``val_auc_mean``, ``val_objective`` and each task's AUC and log loss."""
    overall = table[table["slice"] == "overall"].set_index("task")
    return {"val_auc_mean": mean_auc(table), "val_objective": objective_value(table, objective),
            **{f"val_auc_{t}": float(overall.loc[t, "auc"]) for t in spec.task_names},
            **{f"val_logloss_{t}": float(overall.loc[t, "logloss"]) for t in spec.task_names}}


# ------------------------------------------------------------------------------- the stopping rule


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a better value (``mode`` max or min); NaN is never better than a number."""

    mode: str = "max"
    patience: int = 3
    best: float | None = None
    stale: int = 0
    history: list[float] = field(default_factory=list)

    def update(self, value: float) -> bool:
        """Record an epoch's value; True when it is the best so far."""
        self.history.append(value)
        sign = 1.0 if self.mode == "max" else -1.0
        improved = self.best is None or (bool(np.isfinite(value)) and (not np.isfinite(self.best) or sign * value > sign * self.best))
        self.best, self.stale = (value, 0) if improved else (self.best, self.stale + 1)
        return improved

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience
