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


@app.command()
def tune(
    config: Optional[Path] = typer.Option(None, help="SweepConfig YAML; the options below override it."),
    data: Optional[str] = typer.Option(None, help="Preprocessed data directory (default runs/synthetic/data)."),
    num_samples: Optional[int] = typer.Option(None, min=1, help="Trials (default 8)."),
    max_concurrent: Optional[int] = typer.Option(None, min=1, help="Trials at once (default 2)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per trial (ASHA's max_t)."),
    objective: Optional[str] = typer.Option(None, help="mean_auc | business (per-tier task weights)."),
    num_workers: Optional[int] = typer.Option(None, min=1, help="Ray Train workers per trial."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--cpu", help="GPU or CPU trainer workers."),
    storage: Optional[str] = typer.Option(None, help="Where sweeps go (default runs/tune)."),
    registry: Optional[str] = typer.Option(None, help="Registry to export the best trial to (default runs/registry)."),
    resume: Optional[str] = typer.Option(None, help="Resume the interrupted sweep of this name (Tuner.restore)."),
    wandb: Optional[str] = typer.Option(None, help="offline | online | disabled (default offline)."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Sweep λ_t, τ and the learning rate with Ray Tune (Optuna + ASHA) over Ray Train; export the best."""
    import yaml

    from tamor.platform.ray_env import init_ray
    from tamor.tuning.sweep import SweepConfig, sweep

    raw = yaml.safe_load(config.read_text()) if config else {}
    raw.update({k: v for k, v in {"num_samples": num_samples, "max_concurrent": max_concurrent, "objective": objective,
                                  "storage_path": storage, "registry": registry, "wandb": wandb}.items() if v is not None})
    train_over = {"data_dir": data, "epochs": epochs, "num_workers": num_workers, "use_gpu": gpu}
    raw.setdefault("train", {}).update({k: v for k, v in train_over.items() if v is not None})
    try:
        cfg = SweepConfig.model_validate(raw)
    except Exception as e:
        _fail(f"invalid sweep config: {e}")
    if not (Path(cfg.train.data_dir) / "feature_spec.json").exists():
        _fail(f"no preprocessed data at {cfg.train.data_dir} (run `tamor generate` and `tamor preprocess` first)")
    init_ray(address)
    try:
        summary = sweep(cfg, resume=resume)
    except FileNotFoundError as e:
        _fail(str(e))
    import pandas as pd

    _print_frame(f"sweep {summary['name']}: trials", pd.read_csv(Path(summary["path"]) / "trials.csv").drop(columns=["checkpoint_path"]))
    console.print(f"best trial {summary['best_trial']}: objective {summary['best_objective']:.4f} with {summary['best_params']}")
    console.print(f"{summary['stopped_early']} of {summary['trials']} trials stopped early by ASHA; plots and CSV in {summary['path']}")
    if "registry_version" in summary:
        console.print(f"exported to the registry as {summary['registry_version']}")


registry_app = typer.Typer(help="The model registry: list, show and promote versions.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(registry_app, name="registry")
RegistryOpt = typer.Option("runs/registry", "--registry", help="Registry directory or URI.")


@registry_app.command("list")
def registry_list(registry: str = RegistryOpt) -> None:
    """Every version with its metric, source and aliases."""
    from tamor.platform.registry import Registry, RegistryError

    reg = Registry(registry)
    aliases: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        aliases.setdefault(version, []).append(alias)
    versions = reg.versions()
    if not versions:
        console.print(f"no versions in {registry}")
        return
    computed = {}
    for ref in ("latest", "best"):
        try:
            computed.setdefault(reg.resolve(ref).name, []).append(ref)
        except RegistryError:
            pass
    table = Table(title=f"registry {registry}")
    for col in ("version", "created", "model", "metric", "value", "source", "aliases"):
        table.add_column(col)
    for v in versions:
        m = v.meta
        table.add_row(v.name, m["created"], m["config"]["name"], m["metric"], f"{m['metric_value']:.4f}" if m["metric_value"] is not None else "",
                      m["source"].get("sweep") or m["source"].get("run", ""), ", ".join(computed.get(v.name, []) + aliases.get(v.name, [])))
    console.print(table)


@registry_app.command("show")
def registry_show(ref: str = typer.Argument("latest", help="latest | best | an alias | a version"), registry: str = RegistryOpt) -> None:
    """One version's metadata (metrics, config, source) as JSON."""
    import json

    from tamor.platform.registry import Registry, RegistryError

    try:
        version = Registry(registry).resolve(ref)
    except RegistryError as e:
        _fail(str(e))
    meta = {k: v for k, v in version.meta.items() if k != "feature_spec"}
    console.print_json(json.dumps(meta, default=str))


@registry_app.command("promote")
def registry_promote(ref: str = typer.Argument(..., help="The version (or latest / best) to promote."),
                     alias: str = typer.Option("production", help="The alias to point at it."), registry: str = RegistryOpt) -> None:
    """Point an alias (default: production) at a version; serving can follow the alias."""
    from tamor.platform.registry import Registry, RegistryError

    try:
        version = Registry(registry).promote(ref, alias)
    except RegistryError as e:
        _fail(str(e))
    console.print(f"{alias} → {version.name}")


@app.command("serve")
def serve_cmd(
    data: str = typer.Option("runs/synthetic/data", help="Preprocessed data (feature spec, online/ snapshot, vocabularies)."),
    registry: str = typer.Option("runs/registry", help="Model registry to serve from."),
    ref: str = typer.Option("latest", help="Registry version or alias: latest | best | production | v0003."),
    checkpoint: Optional[str] = typer.Option(None, help="Serve a checkpoint instead of a registry version."),
    redis: Optional[str] = typer.Option(None, help="Redis URL for the feature store (default: the embedded snapshot)."),
    host: str = typer.Option("127.0.0.1", help="HTTP host (loopback unless you mean otherwise)."),
    port: int = typer.Option(8000, help="HTTP port."),
    gpu: bool = typer.Option(False, "--gpu", help="Run the Ranker on a GPU."),
    write_config: Optional[Path] = typer.Option(None, help="Only write a `serve deploy` / `serve run` config YAML here."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Serve the model over HTTP: FeatureLookup → Ranker (@serve.batch) → Reranker behind FastAPI."""
    from tamor.serve.app import AppArgs, start, write_serve_config

    args = AppArgs(data_dir=data, registry=registry, ref=ref, checkpoint=checkpoint, redis_url=redis,
                   device="cuda" if gpu else "cpu", ranker_gpus=1.0 if gpu else 0.0)
    if write_config:
        write_serve_config(write_config, args, host=host, port=port)
        console.print(f"wrote {write_config}: `serve run {write_config}` or `serve deploy {write_config}`")
        return
    if not (Path(data) / "feature_spec.json").exists():
        _fail(f"no preprocessed data at {data}")
    from tamor.platform.ray_env import init_ray

    init_ray(address)
    try:
        args.model_source()
        start(args, host=host, port=port, blocking=False)
    except Exception as e:
        _fail(f"could not start serving: {e}")
    console.print(f"serving on http://{host}:{port}  (POST /recommend, GET /healthz, /version, /docs); Ctrl-C stops")
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()


features_app = typer.Typer(help="The online feature store.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(features_app, name="features")


@features_app.command("load")
def features_load(
    redis: str = typer.Option(..., help="Redis URL, e.g. redis://127.0.0.1:6379/0"),
    data: str = typer.Option("runs/synthetic/data", help="Preprocessed data whose online/ snapshot to load."),
) -> None:
    """Bulk-load the online/ snapshot into Redis for the serving feature store."""
    from tamor.models.feature_spec import FeatureSpec
    from tamor.serve.store import RedisStore

    try:
        counts = RedisStore(redis, FeatureSpec.load(data)).load(Path(data) / "online")
    except Exception as e:
        _fail(f"could not load {data}/online into {redis}: {e}")
    console.print(f"loaded {counts['users']:,} users and {counts['items']:,} items into {redis}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory (report, plots, checkpoints, registry, W&B)."),
    rows: int = typer.Option(200_000, min=1000, help="Impressions in the synthetic world (bigger: --rows 5000000)."),
    epochs: int = typer.Option(3, min=1, help="Training epochs of TAMOR and MMoE."),
    sweep_trials: int = typer.Option(4, min=1, help="Trials of the short sweep."),
    sweep_epochs: int = typer.Option(2, min=1, help="Epochs per sweep trial."),
    requests: int = typer.Option(40, min=1, help="Sample HTTP requests to the served model."),
    ab_days: int = typer.Option(7, min=1, help="Days of the simulated online A/B test."),
    seed: int = typer.Option(0),
) -> None:
    """Everything, end to end, on the synthetic world: data, training, table, sweep, registry, serving, A/B, report."""
    from tamor.cli.demo import DemoConfig, run_demo

    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty: choose a new --out")
    run_demo(DemoConfig(out=out, rows=rows, epochs=epochs, sweep_trials=sweep_trials, sweep_epochs=sweep_epochs,
                        requests=requests, ab_days=ab_days, seed=seed), console)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory written by `tamor demo`.")) -> None:
    """Write (or rewrite) the Markdown report of a run directory."""
    from tamor.cli.report import write_report

    if not run_dir.is_dir():
        _fail(f"no run directory {run_dir}")
    console.print(f"wrote {write_report(run_dir)}")


@app.command()
def simulate(
    data: Path = typer.Option(Path("runs/demo/data"), help="Preprocessed data (online store, vocabularies)."),
    world: Path = typer.Option(Path("runs/demo/synthetic/world.json"), help="The world.json `tamor generate` wrote."),
    treatment: Path = typer.Option(..., help="Checkpoint (directory or model.pt) of the treatment arm."),
    control: Path = typer.Option(..., help="Checkpoint of the control arm."),
    days: int = typer.Option(7, min=1),
    visit_rate: float = typer.Option(0.3, min=0.01, max=1.0),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Write ab_daily.csv and ab.json here."),
) -> None:
    """Simulated online A/B: new high-holding users per day per arm, with a 95% CI of the lift."""
    import json

    from tamor.platform.train import load_checkpoint_model
    from tamor.platform.world import WorldConfig
    from tamor.serve.simulate import SimConfig, lift_with_ci, model_scorer
    from tamor.serve.simulate import simulate as run
    from tamor.serve.store import EmbeddedStore

    for path in (data / "feature_spec.json", world, treatment, control):
        if not path.exists():
            _fail(f"missing {path}")
    raw = json.loads(world.read_text())
    cfg = WorldConfig(**{**raw, "tier_mix": tuple(raw["tier_mix"])})
    models = {"treatment": load_checkpoint_model(treatment), "control": load_checkpoint_model(control)}
    store = EmbeddedStore(data / "online", models["treatment"].spec)
    vocab = json.loads((data / "vocabularies.json").read_text())
    arms = {k: model_scorer(m, store, vocab, {"page": "home"}) for k, m in models.items()}
    daily = run(cfg, arms, SimConfig(days=days, visit_rate=visit_rate, seed=seed))
    result = lift_with_ci(daily, "treatment", "control", seed=seed)
    _print_frame("new high-holding users per day", daily)
    console.print(f"lift {100 * result['lift']:+.2f}% (95% CI {100 * result['ci95'][0]:+.1f}% to {100 * result['ci95'][1]:+.1f}%)")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        daily.to_csv(out / "ab_daily.csv", index=False)
        (out / "ab.json").write_text(json.dumps({**result, "days": days}, indent=2, default=float))


if __name__ == "__main__":
    app()
