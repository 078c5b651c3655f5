"""Weights & Biases tracking from world rank 0 only: offline by default, online with a key, or off.

Offline runs are files under the run directory (``wandb sync <dir>`` uploads them later).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pandas as pd

WandbMode = Literal["offline", "online", "disabled"]


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
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=project, name=name, dir=str(directory), mode=mode, config=config, reinit="create_new",
                              group=group, job_type=job_type)

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


def _run(out: Path, group: str, job_type: str, config: dict[str, Any] | None = None) -> Tracker:
    mode = resolve_mode(os.environ.get("WANDB_MODE", "offline"))  # type: ignore[arg-type]
    return Tracker(True, mode, out, "tamor", f"{group}-{job_type}", config or {}, group=group, job_type=job_type)


def log_evaluation(out: Path, table: pd.DataFrame, group: str) -> None:
    """The paper's table as a ``wandb.Table`` and its chart as an image (job type ``evaluate``)."""
    run = _run(out / "wandb", group, "evaluate")
    run.table("paper_table", table)
    if (out / "paper_table.png").exists():
        run.image("paper_table_chart", out / "paper_table.png")
    run.summary({"cells_tamor_ahead": int((table["lift_pct"] > 0).sum())})
    run.finish()


def log_serving(serving: dict[str, Any], group: str, wandb_dir: Path) -> None:
    """Latency of the sample requests (job type ``serve``)."""
    run = _run(wandb_dir, group, "serve")
    run.summary({k: serving[k] for k in ("requests", "candidates", "p50_ms", "p99_ms", "all_ok", "model_version")})
    run.finish()


def log_gate(table: pd.DataFrame, decision: dict[str, Any], group: str, wandb_dir: Path) -> None:
    """The promotion gate's cell-by-cell table and its decision (job type ``gate``)."""
    run = _run(wandb_dir, group, "gate")
    run.table("gate", table)
    run.summary({"promote": decision["promote"], "reason": decision["reason"], "new": decision["new"],
                 "current": decision["current"] or "", "cells_worse": len(decision["cells_worse"])})
    run.finish()


def log_ab(daily: pd.DataFrame, result: dict[str, Any], group: str, wandb_dir: Path) -> None:
    """New high-holding users per day per arm as series, and the lift with its interval (job type ``ab``)."""
    run = _run(wandb_dir, group, "ab")
    for day, rows in daily.groupby("day"):
        run.log({f"new_high_holding/{r.arm}": int(r.new_high_holding) for r in rows.itertuples()}
                | {f"visitors/{r.arm}": int(r.visitors) for r in rows.itertuples()}, step=int(day))
    run.table("ab_daily", daily)
    run.summary({"lift": result["lift"], "ci95_low": result["ci95"][0], "ci95_high": result["ci95"][1]})
    run.finish()


def read_offline_history(directory: str | Path) -> list[dict[str, Any]]:
    """The ``history`` rows (one per ``log`` call) of every offline W&B run under ``directory``.

    Reads the run's ``.wandb`` file (a LevelDB-style record log of W&B's protobuf records), so a
    test or a person can check what a run logged without uploading it.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    block, header = 32_768, 7
    rows = []
    for path in sorted(Path(directory).rglob("offline-run-*/*.wandb")):
        raw, pos, buf, records = path.read_bytes(), header, b"", []
        while pos + header <= len(raw):
            if block - pos % block < header:  # block trailer too short for a header: padding
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + header])
            pos += header
            if kind == 0 and length == 0:
                break
            buf += raw[pos : pos + length]
            pos += length
            if kind in (1, 4):  # a full record, or the last fragment of one
                records.append(buf)
                buf = b""
        for data in records:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows
