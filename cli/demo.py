"""`tamor demo`: the whole platform on the synthetic world, all real parts, in one command.

generate (Ray Data) → preprocess (Ray Data) → train TAMOR and MMoE (Ray Train) → evaluate → the
paper's table → a short sweep (Ray Tune over Ray Train) exported to the registry → Fig. 3 → the
Serve app over HTTP with sample requests → a simulated online A/B → the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from tamor.cli.common import Steps, epoch_watch
from tamor.cli.demo_config import DemoConfig
from tamor.models.config import ModelConfig
from tamor.platform.tracking import RunGroup, log_ab, log_evaluation, log_serving
from tamor.platform.world import WorldConfig


def sample_requests(url: str, data_dir: Path, n: int, candidates: int = 100, seed: int = 0) -> dict:
    """Send ``n`` requests over HTTP; latency percentiles and one sample answer."""
    import httpx

    rng = np.random.default_rng(seed)
    from tamor.platform.data_dir import DataDir

    users = pd.read_parquet(DataDir(data_dir).online("users"))["user_id"].to_numpy()
    items = pd.read_parquet(DataDir(data_dir).online("items"))["item_id"].to_numpy()
    latencies, statuses, sample = [], [], None
    with httpx.Client(timeout=30) as client:
        for i in range(n):
            body = {"user_id": str(rng.choice(users)), "item_ids": rng.choice(items, min(candidates, len(items)), replace=False).tolist(),
                    "top_n": 10, "context": {"page": "home", "hour": "h20"}}
            start = time.perf_counter()
            r = client.post(f"{url}/recommend", json=body)
            latencies.append(1000 * (time.perf_counter() - start))
            statuses.append(r.status_code)
            if sample is None and r.status_code == 200:
                answer = r.json()
                sample = {**answer, "items": answer["items"][:3]}
    return {
        "requests": n, "candidates": candidates, "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)), "all_ok": all(s == 200 for s in statuses),
        "model_version": (sample or {}).get("model_version"), "sample": sample,
    }


@dataclass
class Demo:
    """What the stages share: the config, the output directory, its step printer and W&B group."""

    cfg: DemoConfig
    out: Path
    step: Steps
    runs: RunGroup

    @property
    def data(self) -> Path:
        return self.out / "data"


def run_demo(cfg: DemoConfig, console: Console) -> Path:
    """Every stage in order; each writes its files under ``cfg.out`` and prints one line with its figure."""
    from tamor.platform.ray_env import init_ray

    out = cfg.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = init_ray(log_dir=out / "logs", verbose=cfg.verbose)
    demo = Demo(cfg, out, Steps(console, out, log), RunGroup(out.name, out / "wandb"))
    world = prepare_data(demo)
    runs = train_both(demo)
    table = evaluate_both(demo, runs)
    summary = sweep_stage(demo, runs)
    tamor_model = fig3_stage(demo, runs)
    serve_stage(demo)
    ab_stage(demo, world, runs, tamor_model)
    print_summary(demo, console, table, summary)
    return out


def prepare_data(demo: Demo) -> WorldConfig:
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.schema import load_schema

    cfg, out = demo.cfg, demo.out
    world = WorldConfig(rows=cfg.rows, n_users=cfg.users, seed=cfg.seed, rows_per_block=max(50_000, cfg.rows // 4))
    with demo.step("generate the synthetic world (Ray Data)") as s:
        s["figure"] = f"{generate(world, out / 'synthetic'):,} impressions of {world.users:,} users"
    with demo.step("preprocess (Ray Data)") as s:
        report = preprocess(str(out / "synthetic" / "logs"), load_schema("synthetic"), demo.data)
        s["figure"] = (f"{report.rows_in:,} rows → train {report.rows_out['train']:,} / valid {report.rows_out['valid']:,} / "
                       f"test {report.rows_out['test']:,}, {report.rows_quarantined:,} quarantined")
    return world


def train_both(demo: Demo) -> dict[str, dict]:
    from tamor.platform.train import TrainConfig, train

    cfg, runs = demo.cfg, {}
    model = ModelConfig(**cfg.model_overrides)
    workers = f"{cfg.workers} DDP workers" if cfg.workers > 1 else "one worker"
    for name in ("tamor", "mmoe"):
        tc = TrainConfig(data_dir=str(demo.data), model=model.model_copy(update={"name": name}), epochs=cfg.epochs, lr=cfg.lr,
                         num_workers=cfg.workers, storage_path=str(demo.out / "train"), name=f"{name}-demo", seed=cfg.seed,
                         wandb_group=demo.runs.name)
        with demo.step(f"train {name} (Ray Train, {workers})", watch=epoch_watch(demo.out / "train" / tc.name, tc.epochs)) as s:
            runs[name] = train(tc)
            s["figure"] = f"best validation AUC (mean over tasks) {runs[name]['best_metrics']['val_auc_mean']:.4f}"
    return runs


def evaluate_both(demo: Demo, runs: dict[str, dict]) -> pd.DataFrame:
    from tamor.models.factory import MODEL_FILE
    from tamor.platform.evaluate import evaluate_checkpoint, write_comparison
    from tamor.platform.registry import Registry

    out = demo.out
    with demo.step("evaluate on the test split, write the paper's table and judge each cell") as s:
        metrics = {name: evaluate_checkpoint(r["best_checkpoint"], demo.data) for name, r in runs.items()}
        for name, m in metrics.items():
            m.to_csv(out / f"{name}_test_metrics.csv", index=False)
        table = write_comparison(metrics["tamor"], metrics["mmoe"], "tamor", "mmoe", out)
        log_evaluation(demo.runs, table, out / "paper_table.png")
        s["figure"] = judge_cells(demo, {name: Path(r["best_checkpoint"]) / MODEL_FILE for name, r in runs.items()})
    Registry(out / "registry").export(Path(runs["tamor"]["best_checkpoint"]) / MODEL_FILE, runs["tamor"]["best_metrics"],
                                      metric="val_auc_mean", source={"kind": "run", "run": runs["tamor"]["name"]})
    return table


def judge_cells(demo: Demo, models: dict[str, Path]) -> str:
    """TAMOR against MMoE in each task × (overall, tier) cell by the one verdict rule (the promotion gate's paired bootstrap on
    the same test rows), written to ``verdicts.csv``; returns the counts in one line."""
    from tamor.cli.report import verdict_line
    from tamor.platform.evaluate import paired_test_predictions
    from tamor.platform.gate import GateConfig, compare
    from tamor.platform.schema import load_schema

    paired = paired_test_predictions(models["tamor"], models["mmoe"], demo.data, load_schema("synthetic"))
    table = compare(paired, GateConfig()).table.rename(columns={"auc_new": "auc_tamor", "auc_current": "auc_mmoe"})
    table.to_csv(demo.out / "verdicts.csv", index=False)
    # one run per model: a seed moves a cell by more than its rows do (bench/peers.py --seeds resamples both)
    return f"{verdict_line(table)} (one training run each: the interval holds the test rows' noise, not the runs')"


def sweep_stage(demo: Demo, runs: dict[str, dict]) -> dict | None:
    """A short sweep exported to the registry (0 trials: none; serving then takes the TAMOR run)."""
    from tamor.platform.registry import Registry
    from tamor.platform.train import TrainConfig
    from tamor.tuning.sweep import SweepConfig, sweep

    cfg, out = demo.cfg, demo.out
    if not cfg.sweep_trials:
        return None
    with demo.step("short sweep of λ, τ and the learning rate (Ray Tune + Optuna + ASHA)") as s:
        sc = SweepConfig(
            train=TrainConfig(data_dir=str(demo.data), model=ModelConfig(**cfg.model_overrides), epochs=cfg.sweep_epochs,
                              batch_size=2048, cpus_per_worker=0.25, patience=cfg.sweep_epochs),
            num_samples=cfg.sweep_trials, max_concurrent=2, storage_path=str(out / "tune"), registry=str(out / "registry"),
            seed=cfg.seed, wandb_group=demo.runs.name, verbose=1 if cfg.verbose else 0,
        )
        summary = sweep(sc)
        (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str))
        (out / "trials.png").write_bytes((Path(summary["path"]) / "trials.png").read_bytes())
        best = Registry(out / "registry").resolve("best")
        s["figure"] = (f"best trial objective {summary['best_objective']:.4f}, {summary['stopped_early']} of {summary['trials']} "
                       f"stopped early by ASHA; registry best = {best.name}")
    return summary


def fig3_stage(demo: Demo, runs: dict[str, dict]):
    from tamor.models.factory import load_model
    from tamor.platform.data_dir import DataDir
    from tamor.platform.figures import fig3, representation_sample

    with demo.step("Fig. 3: tier-aware vs tier-agnostic representations") as s:
        tamor_model = load_model(runs["tamor"]["best_checkpoint"])
        reps, tier = representation_sample(tamor_model, DataDir(demo.data).split("test"), seed=demo.cfg.seed)
        sil = fig3(reps, tier, tamor_model.spec.tiers, demo.out / "fig3.png", seed=demo.cfg.seed)
        (demo.out / "fig3.json").write_text(json.dumps(sil))
        s["figure"] = "silhouette by tier " + ", ".join(f"{k} {v:.3f}" for k, v in sil.items())
    return tamor_model


def serve_stage(demo: Demo) -> None:
    from ray import serve

    from tamor.platform.ray_env import quiet_console
    from tamor.serve.app import AppArgs, start

    with demo.step("serve the best registry version over HTTP and send sample requests (Ray Serve)") as s:
        port = _free_port()
        start(AppArgs(data_dir=str(demo.data), registry=str(demo.out / "registry"), ref="best", ranker_cpus=0.2), port=port)
        if not demo.cfg.verbose:
            quiet_console()  # Serve added console handlers of its own
        try:
            serving = sample_requests(f"http://127.0.0.1:{port}", demo.data, demo.cfg.requests, seed=demo.cfg.seed)
        finally:
            serve.shutdown()
        (demo.out / "serving.json").write_text(json.dumps(serving, indent=2))
        log_serving(demo.runs, serving)
        s["figure"] = f"{serving['requests']} requests, p50 {serving['p50_ms']:.1f} ms, p99 {serving['p99_ms']:.1f} ms, all 200: {serving['all_ok']}"


def ab_stage(demo: Demo, world: WorldConfig, runs: dict[str, dict], tamor_model) -> None:
    from tamor.models.factory import load_model
    from tamor.platform.data_dir import DataDir
    from tamor.serve.simulate import SimConfig, lift_with_ci, model_scorer, simulate
    from tamor.serve.store import EmbeddedStore

    cfg, out = demo.cfg, demo.out
    with demo.step(f"simulated online A/B, TAMOR vs MMoE, {cfg.ab_days} days") as s:
        data_dir = DataDir(demo.data)
        encoder = data_dir.encoder()
        store = EmbeddedStore(data_dir, tamor_model.spec, encoder)
        arms = {name: model_scorer(load_model(r["best_checkpoint"]), store, encoder, {"page": "home"}) for name, r in runs.items()}
        daily = simulate(world, arms, SimConfig(days=cfg.ab_days, seed=cfg.seed))
        daily.to_csv(out / "ab_daily.csv", index=False)
        ab = {**lift_with_ci(daily, "tamor", "mmoe", seed=cfg.seed), "days": cfg.ab_days}
        (out / "ab.json").write_text(json.dumps(ab, indent=2, default=float))
        log_ab(demo.runs, daily, ab)
        s["figure"] = (f"new high-holding users {ab['new_high_holding']}, lift {100 * ab['lift']:+.2f}% "
                       f"(95% CI {100 * ab['ci95'][0]:+.1f}% to {100 * ab['ci95'][1]:+.1f}%)")


def print_summary(demo: Demo, console: Console, table: pd.DataFrame, summary: dict | None) -> None:
    from tamor.cli.common import print_frame
    from tamor.cli.report import write_report

    out = demo.out
    report_path = write_report(out)
    print_frame("TAMOR vs MMoE: test AUC per task and user tier", table)
    sweep_wandb = f"{summary['path']}/wandb, " if summary else ""
    console.print(f"logs: {out / 'logs'}   W&B (offline; `wandb sync`): {out}/train/*/wandb, {sweep_wandb}{out / 'wandb'}")
    console.print(f"plots: {out / 'paper_table.png'}, {out / 'fig3.png'}" + (f", {out / 'trials.png'}" if summary else ""))
    console.print(f"report: {report_path}", highlight=False)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
