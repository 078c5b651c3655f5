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

    def __init__(self, enabled: bool, mode: WandbMode, directory: str | Path, project: str, name: str, config: dict[str, Any]):
        self.run = None
        if not enabled or mode == "disabled":
            return
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, dir=str(directory), mode=mode, config=config, reinit="create_new")

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
