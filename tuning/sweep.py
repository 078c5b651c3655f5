"""`tamor tune`: a Ray Tune sweep whose trials each run the real ``TorchTrainer`` training.

Train V2 way: each trial is a small function that builds the trainer and calls ``fit()``; the
trainer's reports reach Tune from the trial function's own thread (``trial_reports``; Ray's
``TuneReportCallback`` can deadlock a trial whose last report is still queued as ``fit()`` returns).
Optuna proposes (per-task loss weights λ_t, the soft-encoding temperature τ, the learning rate and, where asked,
TAMOR's ``correction_decay``; a range whose ends are equal fixes its parameter), ASHA stops poor trials early, and
the best trial's best checkpoint is exported to the model registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.util.queue import Queue

from tamor.models.errors import TamorError
from tamor.models.factory import MODEL_FILE
from tamor.platform.data_dir import DataDir
from tamor.platform.objectives import TIER_TASK_WEIGHTS
from tamor.platform.plots import save, subplots
from tamor.platform.ray_env import apply_ray_settings
from tamor.platform.registry import Registry
from tamor.platform.tracking import Tracker, resolve_mode
from tamor.platform.train import TrainConfig, build_trainer, unique_name
from tamor.tuning.sweep_config import Range, SweepConfig
from tamor.tuning.trial_reports import CHECKPOINT_PATH_KEY, QueueReports, fit_and_report
from tamor.tuning.trial_tracking import TrialTracking


def domain(values: Range) -> Any:
    """Tune's log-uniform domain of a range, or the one value of a fixed one."""
    return values.low if values.low == values.high else tune.loguniform(values.low, values.high)


def search_space(cfg: SweepConfig, tasks: list[str]) -> dict[str, Any]:
    space = {f"lambda_{t}": domain(cfg.loss_weight) for t in tasks}
    space["temperature"] = domain(cfg.temperature)
    space["lr"] = domain(cfg.lr)
    if cfg.correction_decay is not None:
        space["correction_decay"] = domain(cfg.correction_decay)
    return space


def searched_params(tasks: list[str]) -> list[str]:
    """The parameters a trial may carry, in the order tables and plots show them."""
    return ["temperature", "correction_decay", "lr", *[f"lambda_{t}" for t in tasks]]


def trial_train_config(base: TrainConfig, params: dict[str, Any], tasks: list[str]) -> TrainConfig:
    """The base training config with one trial's λ_t, τ, learning rate and (where searched) correction decay."""
    update = {"loss_weights": {t: float(params[f"lambda_{t}"]) for t in tasks}, "temperature": float(params["temperature"])}
    if "correction_decay" in params:
        update["correction_decay"] = float(params["correction_decay"])
    return base.model_copy(update={"model": base.model.model_copy(update=update), "lr": float(params["lr"])})


def run_trial(params: dict[str, Any]) -> None:
    """One Tune trial: a full ``TorchTrainer`` run, its epoch reports forwarded to Tune."""
    apply_ray_settings()  # the trial's process builds the trainer: on a `ray start` cluster it inherits nothing
    base = TrainConfig.model_validate(params["base"])
    cfg = trial_train_config(base, params, params["tasks"])
    context = tune.get_context()
    name = f"{context.get_experiment_name()}-{context.get_trial_id()}"
    cfg = cfg.model_copy(update={"name": name, "storage_path": params["train_storage"]})
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, name, callbacks=[QueueReports(reports)], loop=params.get("loop"))
    fit_and_report(trainer.fit, reports, tune.report)


def objective_weights(cfg: SweepConfig) -> dict[str, dict[str, float]] | None:
    return TIER_TASK_WEIGHTS if cfg.objective == "business" else None


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def build_tuner(cfg: SweepConfig, name: str, loop: Callable[[dict], None] | None = None) -> tune.Tuner:
    """The Tuner of a sweep; ``loop`` replaces the trainers' per-worker function (tests inject faults so)."""
    tasks = DataDir(cfg.train.data_dir).spec().task_names
    storage = Path(cfg.storage_path).resolve()
    base = cfg.train.model_copy(
        update={
            "data_dir": str(Path(cfg.train.data_dir).resolve()),
            "wandb": "disabled",  # one W&B run per trial comes from the Tune-side callback
            "objective": objective_weights(cfg),
            "metric": "val_objective",
            "max_failures": 0,
        }
    )
    space = {
        **search_space(cfg, tasks),
        "base": base.model_dump(),
        "tasks": tasks,
        "train_storage": str(storage / name / "trainer_runs"),
        **({"loop": loop} if loop else {}),
    }
    if cfg.verbose == 0:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = ConcurrencyLimiter(OptunaSearch(seed=cfg.seed), max_concurrent=cfg.max_concurrent)
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=cfg.train.epochs,
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
    )
    mode = resolve_mode(cfg.wandb)
    excludes = ["base", "tasks", "train_storage", "loop"]
    callbacks = [] if mode == "disabled" else [
        TrialTracking(mode, storage / name / "wandb", cfg.train.wandb_project, cfg.wandb_group or name, excludes)]
    return tune.Tuner(
        tune.with_resources(run_trial, {"cpu": cfg.trial_cpus}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val_objective", mode="max", search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=callbacks, verbose=cfg.verbose),
    )


def ended_by(history: pd.DataFrame | None, train: TrainConfig) -> str:
    """Why a trial that did not fail ended: ``epochs`` (all of them), ``patience`` (the trainer's early stopping) or ``asha``."""
    if history is None or history.empty:
        return "none"
    last = history.iloc[-1]
    if int(last["training_iteration"]) >= train.epochs:
        return "epochs"
    return "patience" if last.get("stale_epochs", 0) >= train.patience else "asha"


def trials_table(grid: tune.ResultGrid, tasks: list[str], train: TrainConfig) -> pd.DataFrame:
    """One row per trial: its parameters, best objective, epochs run, why it ended and status."""
    rows = []
    for result in grid:
        cfg = result.config or {}
        history = result.metrics_dataframe
        best = history["val_objective"].max() if history is not None and "val_objective" in history else float("nan")
        rows.append(
            {
                "trial_id": (result.metrics or {}).get("trial_id", Path(result.path).name),
                "status": "ERROR" if result.error else "TERMINATED",
                "epochs": int(history["training_iteration"].max()) if history is not None and len(history) else 0,
                "ended": "error" if result.error else ended_by(history, train),
                "val_objective": best,
                **{p: cfg.get(p) for p in searched_params(tasks) if p in cfg},
                CHECKPOINT_PATH_KEY: (result.metrics or {}).get(CHECKPOINT_PATH_KEY),
            }
        )
    return pd.DataFrame(rows).sort_values("val_objective", ascending=False, na_position="last").reset_index(drop=True)


def plot_trials(table: pd.DataFrame, tasks: list[str], path: Path) -> None:
    """The objective against each parameter the trials varied: τ, the correction decay, lr, λ_t (log x axes)."""
    params = [p for p in searched_params(tasks) if p in table and table[p].nunique() > 1] or ["temperature"]
    fig, axes = subplots(1, len(params), figsize=(3.2 * len(params), 3.0), sharey=True, squeeze=False)
    for ax, param in zip(axes[0], params):
        ax.scatter(table[param], table["val_objective"], c=table["epochs"], cmap="viridis")
        ax.set_xscale("log")
        ax.set_xlabel({"temperature": "τ", "lr": "learning rate"}.get(param, f"λ {param[7:]}" if param.startswith("lambda_") else param))
    axes[0][0].set_ylabel("validation objective (colour: epochs run)")
    save(fig, path, dpi=110)


def best_checkpoint(grid: tune.ResultGrid) -> tuple[Path, dict]:
    """The best epoch of the best trial (Ray's answer), and the metrics it reported with that checkpoint."""
    result = grid.get_best_result(metric="val_objective", mode="max", scope="all")
    history = result.metrics_dataframe.dropna(subset=[CHECKPOINT_PATH_KEY])
    if history.empty:
        raise TamorError(f"the best trial ({result.path}) kept no checkpoint")
    row = history.loc[history["val_objective"].idxmax()]
    return Path(row[CHECKPOINT_PATH_KEY]), {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def check_fits(cfg: SweepConfig, cluster_cpus: float) -> None:
    """Refuse a sweep whose concurrent trials would leave Ray Data no whole CPU (it would hang)."""
    t = cfg.train
    if t.use_gpu:
        return
    reserved = cfg.max_concurrent * (cfg.trial_cpus + t.num_workers * t.cpus_per_worker)
    if cluster_cpus - reserved < 1.0:
        raise TamorError(
            f"{cfg.max_concurrent} concurrent trials reserve {reserved:.2f} of {cluster_cpus:.0f} CPUs, leaving "
            "Ray Data less than the 1 CPU its tasks need, so trials would wait forever: lower "
            "max_concurrent, num_workers or cpus_per_worker"
        )


def sweep(cfg: SweepConfig, resume: str | None = None, loop: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; export the best trial to the registry; return a summary. ``loop``: see :func:`build_tuner`."""
    check_fits(cfg, ray.cluster_resources().get("CPU", 0))
    name = resume or cfg.name or unique_name("sweep")
    storage = Path(cfg.storage_path).resolve()
    path = storage / name
    tasks = DataDir(cfg.train.data_dir).spec().task_names
    if resume:
        if not tune.Tuner.can_restore(str(path)):
            raise TamorError(f"no sweep to resume at {path}")
        tuner = tune.Tuner.restore(str(path), trainable=tune.with_resources(run_trial, {"cpu": cfg.trial_cpus}), resume_errored=True)
    else:
        tuner = build_tuner(cfg, name, loop)
    grid = tuner.fit()
    table = trials_table(grid, tasks, cfg.train)
    table.to_csv(path / "trials.csv", index=False)
    plot_trials(table, tasks, path / "trials.png")
    best = table.iloc[0]
    ckpt_dir, best_metrics = best_checkpoint(grid)
    summary: dict[str, Any] = {
        "name": name,
        "path": str(path),
        "best_trial": best["trial_id"],
        "best_objective": float(best["val_objective"]),
        "best_params": {k: float(best[k]) for k in searched_params(tasks) if k in best},
        "best_checkpoint": str(ckpt_dir),
        "trials": len(table),
        "stopped_early": int((table["ended"] == "asha").sum()),  # by ASHA
        "stopped_patience": int((table["ended"] == "patience").sum()),  # by the trainer's early stopping
    }
    if cfg.registry:
        version = Registry(cfg.registry).export(
            ckpt_dir / MODEL_FILE,
            {k: v for k, v in best_metrics.items() if isinstance(v, (int, float))},
            metric="val_objective",
            source={"kind": "sweep", "sweep": name, "trial": best["trial_id"], "objective": cfg.objective},
            extra={"params": summary["best_params"]},
        )
        summary["registry_version"] = version.name
    (path / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    tracker = Tracker(True, resolve_mode(cfg.wandb), path / "wandb", cfg.train.wandb_project, f"{name}-summary", {"sweep": cfg.model_dump()},
                      group=cfg.wandb_group or name, job_type="sweep")
    tracker.table("trials", table.drop(columns=[CHECKPOINT_PATH_KEY]))
    tracker.image("objective_vs_params", path / "trials.png")
    tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    tracker.finish()
    return summary

