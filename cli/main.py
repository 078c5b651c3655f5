"""The `tamor` command line: the one module that reaches into every subpackage.

Every command has ``--help`` and defaults that run on the synthetic world; any :class:`TamorError`
is one clear line and exit code 2 (:class:`tamor.cli.common.TamorGroup`). Ray is joined through
``--address`` / ``RAY_ADDRESS`` (e.g. under ``ray job submit``) or started locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tamor.cli import registry_cmd, serve_cmd
from tamor.cli.common import (
    AddressOpt,
    CliError,
    ConfigOpt,
    GpuOpt,
    ModelName,
    ObjectiveChoice,
    SetOpt,
    SplitChoice,
    WandbChoice,
    WandbOpt,
    console,
    data_opt,
    epoch_watch,
    field_opt,
    load_config,
    print_frame,
    require_data,
    session,
    start_ray,
    steps,
    typer_app,
    value,
)
from tamor.cli.demo_config import DemoConfig
from tamor.cli.demo_config import default as demo_default
from tamor.cli.pipeline import PipelineConfig
from tamor.platform.defaults import DEFAULT_DATA
from tamor.platform.train_config import TrainConfig
from tamor.platform.world import WorldConfig
from tamor.tuning.sweep_config import SweepConfig

WORLD = WorldConfig()  # the synthetic world's defaults, which `tamor generate`'s options show
app = typer_app("Tier-Aware Multi-Objective Recommendation on Ray.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Ray's and the workers' logs on the console too.")) -> None:
    """Tier-Aware Multi-Objective Recommendation on Ray: data, training, tuning, serving."""
    session().verbose = verbose


app.add_typer(registry_cmd.app, name="registry")
app.add_typer(serve_cmd.features_app, name="features")
app.command("serve")(serve_cmd.serve)
app.command("simulate")(serve_cmd.simulate)


@app.command()
def generate(
    out: Path = typer.Option(Path("runs/synthetic"), help="Output directory (logs/ and world.json)."),
    rows: int = typer.Option(WORLD.rows, min=1, help="Impressions to generate (50_000_000 works: it is a Ray Data job)."),
    users: Optional[int] = typer.Option(None, min=1, help="Users in the world (default: WorldConfig.users, from the rows)."),
    items: int = typer.Option(WORLD.n_items, min=6, help="Items (mission cards), spread over six scenarios."),
    days: int = typer.Option(WORLD.days, min=1, help="Days the impressions span."),
    seed: int = typer.Option(WORLD.seed, help="Seed: the same seed gives the same rows."),
    rows_per_block: int = typer.Option(WORLD.rows_per_block, min=1, help="Rows drawn by one Ray task."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Generate the synthetic world's tiered impression logs (Parquet shards)."""
    from tamor.platform.generate import generate as run

    start_ray(address, "generate")
    cfg = WorldConfig(rows=rows, n_users=users, n_items=items, days=days, seed=seed, rows_per_block=rows_per_block)
    with steps()("generate the synthetic world (Ray Data)") as s:
        try:
            n = run(cfg, out)
        except FileExistsError as e:
            raise CliError(str(e)) from None
        s["figure"] = f"{n:,} impressions of {cfg.users:,} users and {items} items → {out / 'logs'}"


@app.command()
def preprocess(
    source: str = typer.Option("runs/synthetic/logs", help="Raw logs: a file, directory or URI (CSV, Parquet or JSON)."),
    schema: str = typer.Option("synthetic", help="Schema YAML path, or a shipped schema name (synthetic, census_income)."),
    out: Path = typer.Option(Path(DEFAULT_DATA), help="Output directory (must be new or empty)."),
    max_reject_fraction: Optional[float] = typer.Option(None, min=0, max=1, help="Override the schema's limit."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Validate, split, encode and snapshot raw logs with Ray Data; quarantine bad rows."""
    from tamor.platform.preprocess import preprocess as run
    from tamor.platform.schema import load_schema

    log_schema = load_schema(schema)
    if max_reject_fraction is not None:
        log_schema.preprocess.max_reject_fraction = max_reject_fraction
    start_ray(address, "preprocess")
    with steps()(f"preprocess {log_schema.name} (Ray Data)") as s:
        report = run(source, log_schema, out)
        s["figure"] = (f"{report.rows_in:,} rows → train {report.rows_out['train']:,} / valid {report.rows_out['valid']:,} / "
                       f"test {report.rows_out['test']:,}, {report.rows_quarantined:,} quarantined")
    if report.reasons:  # the figure has the counts; the reasons are worth a table
        table = Table(title=f"quarantined rows by reason (in {out / 'quarantine'})")
        table.add_column("reason")
        table.add_column("rows", justify="right")
        for reason, n in sorted(report.reasons.items()):
            table.add_row(reason, f"{n:,}")
        console.print(table)


@app.command()
def train(
    config: Optional[Path] = ConfigOpt,
    data: Optional[str] = data_opt(None),
    model: Optional[ModelName] = field_opt(TrainConfig, "model.name", "The model."),
    epochs: Optional[int] = field_opt(TrainConfig, "epochs", "Most epochs (early stopping may end sooner).", min=1),
    batch_size: Optional[int] = field_opt(TrainConfig, "batch_size", "Rows per step and worker.", min=1),
    lr: Optional[float] = field_opt(TrainConfig, "lr", "AdamW learning rate.", min=0),
    weight_decay: Optional[float] = field_opt(TrainConfig, "weight_decay", "AdamW weight decay.", min=0),
    ema_decay: Optional[float] = field_opt(TrainConfig, "ema_decay", "Validate and serve a moving average of the weights with this decay (warmed up over the first steps); 0: the raw weights.", min=0, max=0.9999),
    distill: Optional[float] = field_opt(TrainConfig, "distill", "Weight α of the tree teacher's probability in the target; 0: labels only.", min=0, max=1),
    metric: Optional[str] = field_opt(TrainConfig, "metric", "Validation metric for early stopping and the best checkpoint."),
    patience: Optional[int] = field_opt(TrainConfig, "patience", "Epochs without improvement before stopping.", min=1),
    seed: Optional[int] = field_opt(TrainConfig, "seed", "Seed of weights and shuffling."),
    num_workers: Optional[int] = field_opt(TrainConfig, "num_workers", "Data-parallel workers (DDP).", min=1),
    gpu: Optional[bool] = GpuOpt,
    storage: Optional[str] = field_opt(TrainConfig, "storage_path", "Where runs and checkpoints go."),
    name: Optional[str] = typer.Option(None, help="Run name (default: unique). An existing name resumes that run."),
    resume: Optional[str] = typer.Option(None, help="Resume the interrupted run of this name from its latest checkpoint."),
    wandb: Optional[WandbChoice] = WandbOpt,
    set_: Optional[list[str]] = SetOpt,
    evaluate: bool = typer.Option(True, help="Evaluate the best checkpoint on the test split afterwards."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Train a model with Ray Train (TorchTrainer, DDP) fed by Ray Data; checkpoints every epoch."""
    from tamor.platform.train import train as run
    from tamor.platform.train import unique_name

    overrides = {"data_dir": data, "model.name": value(model), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                 "weight_decay": weight_decay, "ema_decay": ema_decay, "distill": distill, "metric": metric, "patience": patience, "seed": seed, "num_workers": num_workers,
                 "use_gpu": gpu, "storage_path": storage, "name": resume or name, "wandb": value(wandb)}
    cfg = load_config(TrainConfig, config, overrides, set_, "training config")
    require_data(cfg.data_dir)
    if resume and not (Path(cfg.storage_path) / resume).exists():
        raise CliError(f"no run named {resume!r} under {cfg.storage_path} to resume")
    start_ray(address, "train")
    cfg = cfg.model_copy(update={"name": cfg.name or unique_name(cfg.model.name)})
    step = steps()
    watch = epoch_watch(Path(cfg.storage_path) / cfg.name, cfg.epochs, cfg.metric)
    with step(f"train {cfg.model.name} (Ray Train, {cfg.num_workers} worker{'s' if cfg.num_workers > 1 else ''})", watch=watch) as s:
        summary = run(cfg)
        s["figure"] = f"best {cfg.metric} {summary['best_metrics'][cfg.metric]:.4f} at epoch {summary['best_metrics'].get('epoch', 0) + 1}"
    console.print(f"run [bold]{summary['name']}[/] → {summary['run_dir']}")
    console.print(f"best checkpoint: {summary['best_checkpoint']}")
    if evaluate:
        from tamor.platform.evaluate import evaluate_checkpoint

        with step("evaluate the best checkpoint on the test split") as s:
            metrics = evaluate_checkpoint(summary["best_checkpoint"], cfg.data_dir)
            metrics.to_csv(Path(summary["run_dir"]) / "test_metrics.csv", index=False)
            s["figure"] = f"mean test AUC {metrics[metrics['slice'] == 'overall']['auc'].mean():.4f}"
        print_frame("test AUC per task and tier", metrics[metrics["slice"] != "scenario"][["task", "slice", "group", "n", "auc", "logloss", "ece"]])


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="Checkpoint directory (or model.pt) to evaluate."),
    data: str = data_opt(),
    split: SplitChoice = typer.Option(SplitChoice.test, help="The split to evaluate on."),
    baseline: Optional[Path] = typer.Option(None, help="A second checkpoint: write the paper's table (A vs baseline)."),
    name: str = typer.Option("tamor", help="Name of the evaluated model in the table."),
    baseline_name: str = typer.Option("mmoe", help="Name of the baseline in the table."),
    out: Path = typer.Option(Path("runs/evaluation"), help="Where metrics, table and chart are written."),
    device: str = typer.Option("cpu", help="Where the model scores: cpu, or cuda for this machine's GPU."),
    address: Optional[str] = AddressOpt,
) -> None:
    """AUC and log loss per task, overall / per tier / per scenario; with --baseline, the paper's table."""
    from tamor.platform.evaluate import evaluate_checkpoint, scoring_device, write_comparison
    scoring_device(device)
    for path in [checkpoint] + ([baseline] if baseline else []):
        if not path.exists():
            raise CliError(f"no checkpoint at {path}")
    start_ray(address, "evaluate")
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_checkpoint(checkpoint, data, split.value, device=device)
    metrics.to_csv(out / f"{name}_{split.value}_metrics.csv", index=False)
    print_frame(f"{name}: {split.value} metrics", metrics[["task", "slice", "group", "n", "positives", "auc", "logloss", "ece", "note"]])
    if baseline:
        base = evaluate_checkpoint(baseline, data, split.value, device=device)
        base.to_csv(out / f"{baseline_name}_{split.value}_metrics.csv", index=False)
        table = write_comparison(metrics, base, name, baseline_name, out)
        print_frame(f"{name} vs {baseline_name}: AUC per task and user tier ({split.value})", table)
        console.print(f"wrote {out / 'paper_table.md'}, .csv and .png")


@app.command()
def tune(
    config: Optional[Path] = ConfigOpt,
    data: Optional[str] = data_opt(None),
    num_samples: Optional[int] = field_opt(SweepConfig, "num_samples", "Trials.", min=1),
    max_concurrent: Optional[int] = field_opt(SweepConfig, "max_concurrent", "Trials at once.", min=1),
    epochs: Optional[int] = field_opt(SweepConfig, "train.epochs", "Epochs per trial (ASHA's max_t).", min=1),
    objective: Optional[ObjectiveChoice] = field_opt(SweepConfig, "objective", "mean_auc, or business (per-tier task weights)."),
    num_workers: Optional[int] = field_opt(SweepConfig, "train.num_workers", "Ray Train workers per trial.", min=1),
    gpu: Optional[bool] = GpuOpt,
    storage: Optional[str] = field_opt(SweepConfig, "storage_path", "Where sweeps go."),
    registry: Optional[str] = field_opt(SweepConfig, "registry", "Registry to export the best trial to."),
    resume: Optional[str] = typer.Option(None, help="Resume the interrupted sweep of this name (Tuner.restore)."),
    wandb: Optional[WandbChoice] = WandbOpt,
    set_: Optional[list[str]] = SetOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Sweep λ_t, τ and the learning rate with Ray Tune (Optuna + ASHA) over Ray Train; export the best.

    TAMOR's correction decay joins the search with ``--set correction_decay.low=0.1 --set correction_decay.high=30``;
    a range whose ends are equal fixes its parameter (``--set loss_weight.low=1 --set loss_weight.high=1``)."""
    import pandas as pd

    from tamor.tuning.sweep import sweep

    overrides = {"num_samples": num_samples, "max_concurrent": max_concurrent, "objective": value(objective), "storage_path": storage,
                 "registry": registry, "wandb": value(wandb), "train.data_dir": data, "train.epochs": epochs,
                 "train.num_workers": num_workers, "train.use_gpu": gpu, "verbose": 1 if session().verbose else 0}
    cfg = load_config(SweepConfig, config, overrides, set_, "sweep config")
    require_data(cfg.train.data_dir)
    start_ray(address, "tune")
    searched = "λ, τ, the learning rate" + (" and the correction decay" if cfg.correction_decay else "")
    with steps()(f"sweep {cfg.num_samples} trials of {searched} (Ray Tune + Optuna + ASHA)") as s:
        summary = sweep(cfg, resume=resume)
        s["figure"] = f"best objective {summary['best_objective']:.4f}"
    print_frame(f"sweep {summary['name']}: trials", pd.read_csv(Path(summary["path"]) / "trials.csv").drop(columns=["checkpoint_path"]))
    console.print(f"best trial {summary['best_trial']}: objective {summary['best_objective']:.4f} with {summary['best_params']}")
    console.print(f"{summary['stopped_early']} of {summary['trials']} trials stopped early by ASHA, {summary['stopped_patience']} by "
                  f"the trainer's early stopping (patience); plots and CSV in {summary['path']}")
    if "registry_version" in summary:
        console.print(f"exported to the registry as {summary['registry_version']}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory (report, plots, checkpoints, registry, W&B)."),
    rows: int = typer.Option(demo_default("rows"), min=1000, help="Impressions in the synthetic world (bigger: --rows 5000000)."),
    epochs: int = typer.Option(demo_default("epochs"), min=1, help="Training epochs of TAMOR and MMoE."),
    workers: int = typer.Option(demo_default("workers"), min=1, help="DDP workers per training run."),
    sweep_trials: int = typer.Option(demo_default("sweep_trials"), min=0, help="Trials of the short sweep (0: no sweep)."),
    sweep_epochs: int = typer.Option(demo_default("sweep_epochs"), min=1, help="Epochs per sweep trial."),
    requests: int = typer.Option(demo_default("requests"), min=1, help="Sample HTTP requests to the served model."),
    ab_days: int = typer.Option(demo_default("ab_days"), min=1, help="Days of the simulated online A/B test."),
    seed: int = typer.Option(demo_default("seed")),
) -> None:
    """Everything, end to end, on the synthetic world: data, training, table, sweep, registry, serving, A/B, report."""
    from tamor.cli.demo import run_demo

    if out.exists() and any(out.iterdir()):
        raise CliError(f"{out} is not empty: choose a new --out")
    session().log = out.resolve() / "logs" / "driver.log"
    run_demo(DemoConfig(out=out, rows=rows, epochs=epochs, workers=workers, sweep_trials=sweep_trials, sweep_epochs=sweep_epochs,
                        requests=requests, ab_days=ab_days, seed=seed, verbose=session().verbose), console)


@app.command()
def pipeline(
    config: Optional[Path] = ConfigOpt,
    source: Optional[str] = typer.Option(None, help="Raw logs; default: a synthetic world of --rows impressions."),
    schema: Optional[str] = field_opt(PipelineConfig, "schema_name", "Schema of the logs."),
    rows: Optional[int] = field_opt(PipelineConfig, "rows", "Synthetic world size.", min=1000),
    data: Optional[str] = typer.Option(None, help="An already preprocessed directory (skips preprocessing)."),
    out: Optional[str] = field_opt(PipelineConfig, "out", "Run directory."),
    registry: Optional[str] = field_opt(PipelineConfig, "registry", "Model registry, a path or URI."),
    epochs: Optional[int] = field_opt(PipelineConfig, "train.epochs", "Most training epochs.", min=1),
    num_workers: Optional[int] = field_opt(PipelineConfig, "train.num_workers", "Training workers, each on its own node by default.", min=1),
    deploy: Optional[bool] = field_opt(PipelineConfig, "deploy", "Deploy the production model to Serve.", "--deploy/--no-deploy"),
    port: Optional[int] = field_opt(PipelineConfig, "port", "Serve's HTTP port."),
    set_: Optional[list[str]] = SetOpt,
    address: Optional[str] = AddressOpt,
) -> None:
    """Logs to a served model in one job: preprocess → train → evaluate → export → promotion gate → deploy."""
    from tamor.cli.pipeline import run_pipeline

    overrides = {"source": source, "schema": schema, "rows": rows, "data_dir": data, "out": out, "registry": registry,
                 "train.epochs": epochs, "train.num_workers": num_workers, "deploy": deploy, "port": port}
    cfg = load_config(PipelineConfig, config, overrides, set_, "pipeline config")
    if cfg.data_dir:
        require_data(cfg.data_dir)
    start_ray(address, "pipeline", log_dir=Path(cfg.out) / "logs")
    record = run_pipeline(cfg, console)
    gate = record["gate"]
    console.print(f"gate: {'[green]PROMOTED[/]' if gate['promote'] else '[red]REFUSED[/]'} {gate['new']} — {gate['reason']}")
    console.print(f"{cfg.gate.alias}: {gate[cfg.gate.alias]}; record: {Path(cfg.out) / 'pipeline.json'}", highlight=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `tamor demo`.")) -> None:
    """Write (or rewrite) the Markdown report of a run directory."""
    from tamor.cli.report import write_report

    if not run_dir.is_dir():
        raise CliError(f"no run directory {run_dir}")
    console.print(f"wrote {write_report(run_dir)}")


if __name__ == "__main__":
    app()
