"""Weights & Biases tracking from world rank 0 only: offline by default, online with a key, or off.

Offline runs are files under the run directory (``wandb sync <dir>`` uploads them later).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

WandbMode = Literal["offline", "online", "disabled"]
DEFAULT_PROJECT = "tamor"  # the W&B project every run goes to unless configured


def resolve_mode(mode: WandbMode | None) -> WandbMode:
    """``online`` only when asked for and a key is configured; ``offline`` otherwise (unless disabled)."""
    if mode == "disabled":
        return "disabled"
    if mode == "online" and (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
        return "online"
    return "offline"


class Tracker:
    """A thin wrapper over one W&B run; every method is a no-op when tracking is off."""

    def __init__(self, enabled: bool, mode: WandbMode, directory: str | Path, project: str, name: str, config: dict[str, Any],
                 group: str | None = None, job_type: str | None = None):
        self.run = None
        if not enabled or mode == "disabled":
            return
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=str(directory), mode=mode, config=config, reinit="create_new",
                              group=group, job_type=job_type, settings=wandb.Settings(silent=True))

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def table(self, key: str, frame: pd.DataFrame) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})

    def image(self, key: str, path: str | Path) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


# ------------------------------------------------------------------------ runs of one demo or job
# Every W&B run of one demo or job shares a group; each has a job type (train, evaluate, sweep, serve,
# ab), so the project's workspace groups them and filters by stage.


@dataclass(frozen=True)
class RunGroup:
    """The W&B runs of one demo or job: their group name, directory, mode and project (each stage one run).

    Example:
        >>> RunGroup("demo-1", Path("/tmp/demo/wandb"), mode="disabled").tracker("ab").run is None
        True
    """

    name: str
    directory: Path
    mode: WandbMode = "offline"
    project: str = DEFAULT_PROJECT

    def tracker(self, job_type: str, config: dict[str, Any] | None = None) -> Tracker:
        return Tracker(True, resolve_mode(self.mode), self.directory, self.project, f"{self.name}-{job_type}", config or {},
                       group=self.name, job_type=job_type)


def log_evaluation(runs: RunGroup, table: pd.DataFrame, chart: Path | None = None) -> None:
    """The paper's table as a ``wandb.Table`` and its chart as an image (job type ``evaluate``)."""
    run = runs.tracker("evaluate")
    run.table("paper_table", table)
    if chart is not None and chart.exists():
        run.image("paper_table_chart", chart)
    run.summary({"cells_tamor_ahead": int((table["lift_pct"] > 0).sum())})
    run.finish()


def log_serving(runs: RunGroup, serving: dict[str, Any]) -> None:
    """Latency of the sample requests (job type ``serve``)."""
    run = runs.tracker("serve")
    run.summary({k: serving[k] for k in ("requests", "candidates", "p50_ms", "p99_ms", "all_ok", "model_version")})
    run.finish()


def log_gate(runs: RunGroup, table: pd.DataFrame, decision: dict[str, Any]) -> None:
    """The promotion gate's cell-by-cell table and its decision (job type ``gate``)."""
    run = runs.tracker("gate")
    run.table("gate", table)
    run.summary({"promote": decision["promote"], "reason": decision["reason"], "new": decision["new"],
                 "current": decision["current"] or "", "cells_worse": len(decision["cells_worse"])})
    run.finish()


def log_ab(runs: RunGroup, daily: pd.DataFrame, result: dict[str, Any]) -> None:
    """New high-holding users per day per arm as series, and the lift with its interval (job type ``ab``)."""
    run = runs.tracker("ab")
    for day, rows in daily.groupby("day"):
        run.log({f"new_high_holding/{r.arm}": int(r.new_high_holding) for r in rows.itertuples()}
                | {f"visitors/{r.arm}": int(r.visitors) for r in rows.itertuples()}, step=int(day))
    run.table("ab_daily", daily)
    run.summary({"lift": result["lift"], "ci95_low": result["ci95"][0], "ci95_high": result["ci95"][1]})
    run.finish()
