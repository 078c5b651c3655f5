"""`tamor pipeline`: one job from new logs to a served model, made to run with `ray job submit`.

preprocess (Ray Data) → train (Ray Train, ``num_workers`` workers, by default each on its own node)
→ evaluate on the test split → export to the registry → the promotion gate against the current
``production`` model, on the same test rows → deploy ``production`` to Serve.

A refused model stays in the registry (as a version, never under the alias) and serving keeps the
model it had: nothing good is replaced by something worse. The gate's table and decision go to
``<out>/gate.csv``, ``<out>/pipeline.json`` and W&B (job type ``gate``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from tamor.cli.common import Steps, epoch_watch
from tamor.platform.defaults import DEFAULT_REGISTRY, SERVE_PORT
from tamor.platform.gate import GateConfig
from tamor.platform.run_files import read_epochs
from tamor.platform.train_config import TrainConfig


class PipelineTrainConfig(TrainConfig):
    """Training as the pipeline runs it by default: two data-parallel workers, each on its own node."""

    num_workers: int = Field(2, ge=1)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = "STRICT_SPREAD"


class PipelineConfig(BaseModel):
    """Everything one pipeline run needs; a YAML file (``--config``) with ``--set`` overrides."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    source: str | None = Field(None, description="raw logs (files, directory or glob); None: a synthetic world of `rows`")
    schema_name: str = Field("synthetic", alias="schema", description="a built-in schema name or a schema YAML")
    rows: int = Field(200_000, ge=1000, description="synthetic world size, when no source is given")
    data_dir: str | None = Field(None, description="an already preprocessed directory: skips preprocessing")
    out: str = "runs/pipeline"
    registry: str = Field(DEFAULT_REGISTRY, description="a local path or any pyarrow filesystem URI")
    train: PipelineTrainConfig = Field(default_factory=PipelineTrainConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    deploy: bool = True
    port: int = SERVE_PORT
    ranker_cpus: float = Field(0.2, gt=0)


def run_pipeline(cfg: PipelineConfig, console: Console) -> dict:
    """Run every stage; returns (and writes to ``<out>/pipeline.json``) what happened."""
    from tamor.platform.registry import Registry
    from tamor.platform.schema import load_schema

    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    step = Steps(console, out)
    schema = load_schema(cfg.schema_name)
    record: dict = {"config": cfg.model_dump(mode="json", by_alias=True)}
    data = prepare_data(cfg, schema, out, step)
    tc = cfg.train.model_copy(update={"data_dir": str(data), "storage_path": str(out / "train"),
                                      "name": cfg.train.name or "model", "wandb_group": cfg.train.wandb_group or out.name})
    summary = train_stage(tc, console, step, record)
    registry = Registry(cfg.registry)
    version = export_stage(summary, tc, registry, data, out, step, record)
    gate_stage(cfg, tc, registry, summary, version, schema, data, out, step, record)
    if cfg.deploy:
        deploy_stage(cfg, registry, data, step, record)
    (out / "pipeline.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def prepare_data(cfg: PipelineConfig, schema, out: Path, step: Steps) -> Path:
    """The preprocessed directory: the one given, one left by an earlier run, or the source (or a synthetic world) preprocessed."""
    from tamor.platform.data_dir import DataDir
    from tamor.platform.preprocess import preprocess

    data = Path(cfg.data_dir) if cfg.data_dir else out / "data"
    if cfg.data_dir is not None or DataDir(data).exists():
        return data
    source = cfg.source
    if source is None:
        from tamor.platform.generate import generate
        from tamor.platform.world import WorldConfig

        with step("generate a synthetic world (Ray Data)") as s:
            world = WorldConfig(rows=cfg.rows, seed=cfg.train.seed, rows_per_block=max(50_000, cfg.rows // 4))
            s["figure"] = f"{generate(world, out / 'synthetic'):,} impressions"
        source = str(out / "synthetic" / "logs")
    with step("preprocess (Ray Data)") as s:
        report = preprocess(source, schema, data)
        s["figure"] = f"{report.rows_in:,} rows, {report.rows_quarantined:,} quarantined"
    return data


def train_stage(tc, console: Console, step: Steps, record: dict) -> dict:
    import ray

    from tamor.platform.train import train

    nodes = sum(n["Alive"] for n in ray.nodes())
    if tc.placement_strategy == "STRICT_SPREAD" and nodes < tc.num_workers:  # one machine: it would wait forever
        console.print(f"[yellow]{nodes} node(s) for {tc.num_workers} workers: placement SPREAD instead of STRICT_SPREAD[/]")
        tc = tc.model_copy(update={"placement_strategy": "SPREAD"})
    watch = epoch_watch(Path(tc.storage_path) / tc.name, tc.epochs, tc.metric)
    with step(f"train {tc.model.name} (Ray Train, {tc.num_workers} workers, {tc.placement_strategy})", watch=watch) as s:
        summary = train(tc)
        record["train"] = {k: summary[k] for k in ("name", "run_dir", "best_checkpoint", "best_metrics", "stopped")}
        record["train"]["worker_nodes"] = worker_nodes(Path(summary["run_dir"]))
        s["figure"] = (f"best {tc.metric} {summary['best_metrics'][tc.metric]:.4f}; workers on "
                       f"{len(set(record['train']['worker_nodes']))} node(s)")
    return summary


def export_stage(summary: dict, tc, registry, data: Path, out: Path, step: Steps, record: dict):
    from tamor.models.factory import MODEL_FILE
    from tamor.platform.evaluate import evaluate_checkpoint

    with step("evaluate the new model on the test split and export it to the registry") as s:
        new = evaluate_checkpoint(summary["best_checkpoint"], data)
        new.to_csv(out / "test_metrics.csv", index=False)
        version = registry.export(Path(summary["best_checkpoint"]) / MODEL_FILE, summary["best_metrics"], metric=tc.metric,
                                  mode=tc.mode, source={"kind": "pipeline", "run": summary["name"], "out": str(out)})
        record["exported"] = version.name
        s["figure"] = f"{version.name}, mean test AUC {new[new['slice'] == 'overall']['auc'].mean():.4f}"
    return version


def gate_stage(cfg: PipelineConfig, tc, registry, summary: dict, version, schema, data: Path, out: Path, step: Steps,
               record: dict) -> None:
    from tamor.models.factory import MODEL_FILE
    from tamor.platform.evaluate import paired_test_predictions
    from tamor.platform.gate import compare
    from tamor.platform.registry import RegistryError
    from tamor.platform.tracking import RunGroup, log_gate

    with step(f"promotion gate against {cfg.gate.alias!r} (same test rows, task × tier, paired 95% intervals)") as s:
        try:
            current = registry.resolve(cfg.gate.alias)
        except RegistryError:
            current = None
        paired = paired_test_predictions(Path(summary["best_checkpoint"]) / MODEL_FILE,
                                         registry.local_model_file(current.name) if current else None, data, schema)
        decision = compare(paired, cfg.gate)
        decision.table.to_csv(out / "gate.csv", index=False)
        if decision.promote:
            registry.promote(version.name, cfg.gate.alias)
        record["gate"] = {**decision.as_dict(), "new": version.name, "current": current.name if current else None,
                          cfg.gate.alias: registry.resolve(cfg.gate.alias).name}
        log_gate(RunGroup(tc.wandb_group, out / "wandb", tc.wandb, tc.wandb_project), decision.table, record["gate"])
        s["figure"] = decision.reason


def deploy_stage(cfg: PipelineConfig, registry, data: Path, step: Steps, record: dict) -> None:
    from tamor.serve.app import AppArgs, start

    with step(f"deploy {cfg.gate.alias!r} to Ray Serve on port {cfg.port}") as s:
        start(AppArgs(data_dir=str(data), registry=cfg.registry, ref=cfg.gate.alias, ranker_cpus=cfg.ranker_cpus), port=cfg.port)
        record["served"] = registry.resolve(cfg.gate.alias).name
        s["figure"] = f"serving {record['served']} at http://127.0.0.1:{cfg.port}/recommend"


def worker_nodes(run_dir: Path) -> list[str]:
    """The node of each training worker (rank order), from the last epoch the run logged."""
    logged = read_epochs(run_dir)
    workers = logged[-1].get("workers", []) if logged else []
    return [w["node"] for w in sorted(workers, key=lambda w: w["rank"])]
