"""The `tamor` command line: the one module that reaches into every subpackage.

Every command has ``--help`` and defaults that run on the synthetic world. Ray is joined through
``--address`` / ``RAY_ADDRESS`` (e.g. under ``ray job submit``) or started locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Tier-Aware Multi-Objective Recommendation on Ray.", no_args_is_help=True, add_completion=False, rich_markup_mode=None)
console = Console()

AddressOpt = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a new local Ray).")


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def generate(
    out: Path = typer.Option(Path("runs/synthetic"), help="Output directory (logs/ and world.json)."),
    rows: int = typer.Option(200_000, min=1, help="Impressions to generate (50_000_000 works: it is a Ray Data job)."),
    users: Optional[int] = typer.Option(None, min=1, help="Users in the world (default rows/20)."),
    items: int = typer.Option(240, min=6, help="Items (mission cards), spread over six scenarios."),
    days: int = typer.Option(14, min=1, help="Days the impressions span."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same rows."),
    rows_per_block: int = typer.Option(100_000, min=1, help="Rows drawn by one Ray task."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Generate the synthetic world's tiered impression logs (Parquet shards)."""
    from tamor.platform.generate import generate as run
    from tamor.platform.ray_env import init_ray
    from tamor.platform.world import WorldConfig

    init_ray(address)
    cfg = WorldConfig(rows=rows, n_users=users, n_items=items, days=days, seed=seed, rows_per_block=rows_per_block)
    try:
        n = run(cfg, out)
    except FileExistsError as e:
        _fail(str(e))
    console.print(f"wrote {n:,} impressions of {cfg.users:,} users and {items} items to {out / 'logs'}")


@app.command()
def preprocess(
    source: str = typer.Option("runs/synthetic/logs", help="Raw logs: a file, directory or URI (CSV, Parquet or JSON)."),
    schema: str = typer.Option("synthetic", help="Schema YAML path, or a shipped schema name (synthetic, census_income)."),
    out: Path = typer.Option(Path("runs/synthetic/data"), help="Output directory (must be new or empty)."),
    max_reject_fraction: Optional[float] = typer.Option(None, min=0, max=1, help="Override the schema's limit."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Validate, split, encode and snapshot raw logs with Ray Data; quarantine bad rows."""
    from tamor.platform.preprocess import PreprocessError
    from tamor.platform.preprocess import preprocess as run
    from tamor.platform.ray_env import init_ray
    from tamor.platform.schema import SchemaError, load_schema

    try:
        log_schema = load_schema(schema)
    except SchemaError as e:
        _fail(str(e))
    if max_reject_fraction is not None:
        log_schema.preprocess.max_reject_fraction = max_reject_fraction
    init_ray(address)
    try:
        report = run(source, log_schema, out)
    except (PreprocessError, KeyError) as e:
        _fail(str(e))
    table = Table(title=f"preprocess {log_schema.name} → {out}")
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_row("in", f"{report.rows_in:,}")
    for split, n in report.rows_out.items():
        table.add_row(split, f"{n:,}")
    table.add_row("quarantined", f"{report.rows_quarantined:,}")
    for reason, n in sorted(report.reasons.items()):
        table.add_row(f"  {reason}", f"{n:,}")
    console.print(table)


def _print_frame(title: str, frame, float_fmt: str = "{:.4f}") -> None:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "fi" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[float_fmt.format(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, help="TrainConfig YAML; the options below override it."),
    data: Optional[str] = typer.Option(None, help="Preprocessed data directory [runs/synthetic/data]."),
    model: Optional[str] = typer.Option(None, help="tamor | mmoe | ple | shared_bottom | per_tier_mmoe [tamor]."),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None, min=0),
    num_workers: Optional[int] = typer.Option(None, min=1, help="Data-parallel workers (DDP)."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="Force GPU or CPU workers (default: GPUs if the cluster has them)."),
    storage: Optional[str] = typer.Option(None, help="Where runs and checkpoints go [runs/train]."),
    name: Optional[str] = typer.Option(None, help="Run name (default: unique). An existing name resumes that run."),
    resume: Optional[str] = typer.Option(None, help="Resume the interrupted run of this name from its latest checkpoint."),
    wandb: Optional[str] = typer.Option(None, help="offline | online | disabled [offline]."),
    evaluate: bool = typer.Option(True, help="Evaluate the best checkpoint on the test split afterwards."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Train a model with Ray Train (TorchTrainer, DDP) fed by Ray Data; checkpoints every epoch."""
    import yaml

    from tamor.platform.ray_env import init_ray
    from tamor.platform.train import TrainConfig
    from tamor.platform.train import train as run

    raw = yaml.safe_load(config.read_text()) if config else {}
    overrides = {"data_dir": data, "epochs": epochs, "batch_size": batch_size, "lr": lr, "num_workers": num_workers,
                 "use_gpu": gpu, "storage_path": storage, "name": resume or name, "wandb": wandb}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if model:
        raw.setdefault("model", {})["name"] = model
    try:
        cfg = TrainConfig.model_validate(raw)
    except Exception as e:  # pydantic's message names the bad field
        _fail(f"invalid training config: {e}")
    if not (Path(cfg.data_dir) / "feature_spec.json").exists():
        _fail(f"no preprocessed data at {cfg.data_dir} (run `tamor generate` and `tamor preprocess` first)")
    if resume and not (Path(cfg.storage_path) / resume).exists():
        _fail(f"no run named {resume!r} under {cfg.storage_path} to resume")
    init_ray(address)
    summary = run(cfg)
    console.print(f"run [bold]{summary['name']}[/] → {summary['run_dir']}")
    console.print(f"best checkpoint: {summary['best_checkpoint']} ({cfg.metric} = {summary['best_metrics'][cfg.metric]:.4f})")
    if evaluate:
        from tamor.platform.evaluate import evaluate_checkpoint

        metrics = evaluate_checkpoint(summary["best_checkpoint"], cfg.data_dir)
        metrics.to_csv(Path(summary["run_dir"]) / "test_metrics.csv", index=False)
        _print_frame("test AUC per task and tier", metrics[metrics["slice"] != "scenario"][["task", "slice", "group", "n", "auc", "logloss"]])


@app.command()
def evaluate(
    checkpoint: Path = typer.Option(..., help="Checkpoint directory (or model.pt) to evaluate."),
    data: str = typer.Option("runs/synthetic/data", help="Preprocessed data directory."),
    split: str = typer.Option("test", help="train | valid | test."),
    baseline: Optional[Path] = typer.Option(None, help="A second checkpoint: write the paper's table (A vs baseline)."),
    name: str = typer.Option("tamor", help="Name of the evaluated model in the table."),
    baseline_name: str = typer.Option("mmoe", help="Name of the baseline in the table."),
    out: Path = typer.Option(Path("runs/evaluation"), help="Where metrics, table and chart are written."),
    address: Optional[str] = AddressOpt,
) -> None:
    """AUC and log loss per task, overall / per tier / per scenario; with --baseline, the paper's table."""
    from tamor.platform.evaluate import evaluate_checkpoint, write_comparison
    from tamor.platform.ray_env import init_ray

    for path in [checkpoint] + ([baseline] if baseline else []):
        if not path.exists():
            _fail(f"no checkpoint at {path}")
    init_ray(address)
    out.mkdir(parents=True, exist_ok=True)
    metrics = evaluate_checkpoint(checkpoint, data, split)
    metrics.to_csv(out / f"{name}_{split}_metrics.csv", index=False)
    _print_frame(f"{name}: {split} metrics", metrics[["task", "slice", "group", "n", "positives", "auc", "logloss", "note"]])
    if baseline:
        base = evaluate_checkpoint(baseline, data, split)
        base.to_csv(out / f"{baseline_name}_{split}_metrics.csv", index=False)
        table = write_comparison(metrics, base, name, baseline_name, out)
        _print_frame(f"{name} vs {baseline_name}: AUC per task and user tier ({split})", table)
        console.print(f"wrote {out / 'paper_table.md'}, .csv and .png")


if __name__ == "__main__":
    app()
