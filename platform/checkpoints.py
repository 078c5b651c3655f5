"""A training run's checkpoints on disk: what one holds, which are whole, which to resume from, and what to tidy.

Ray-free. Ray Train decides which checkpoint a recovered worker gets (the latest it recorded); this module
makes that choice survive a checkpoint that was cut short on disk, and keeps the run's epoch log in step
with the checkpoint it goes on from.

Example:
    >>> import tempfile
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> (run_dir / "checkpoint_a").mkdir()
    >>> intact(run_dir / "checkpoint_a")
    False
    >>> resume_point(run_dir / "checkpoint_a", run_dir) is None
    True
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pandas as pd
import torch

from tamor.models.errors import TamorError
from tamor.models.factory import MODEL_FILE, model_state
from tamor.platform.run_files import EPOCHS_FILE, TRAINING_STATE_FILE
from tamor.platform.step import EarlyStopping, Learner

CHECKPOINT_GLOB = "checkpoint_*"  # how Ray Train names the checkpoint directories of a run (beside a file or two of its own)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories, oldest first (Ray Train's names sort by time)."""
    return sorted(p for p in run_dir.glob(CHECKPOINT_GLOB) if p.is_dir())


class CheckpointError(TamorError):
    """No checkpoint of a run can be read."""


def save_checkpoint(learner: Learner, stopping: EarlyStopping, epoch: int, table: pd.DataFrame, directory: Path) -> None:
    """The judged model (what is served), and what training goes on from: raw weights, optimiser, epoch, stopping state."""
    torch.save(model_state(learner.judged), directory / MODEL_FILE)
    state = {"optimizer": learner.optimizer.state_dict(), "epoch": epoch, "best": stopping.best, "stale": stopping.stale}
    if learner.average is not None:
        state["raw_state_dict"] = {k: v.detach().cpu() for k, v in learner.core.state_dict().items()}
        state["ema_updates"] = int(learner.average.n_averaged)
    torch.save(state, directory / TRAINING_STATE_FILE)
    table.to_csv(directory / "valid_metrics.csv", index=False)


def restore(learner: Learner, stopping: EarlyStopping, directory: Path) -> int:
    """Load a checkpoint written by :func:`save_checkpoint` into ``learner`` and ``stopping``; the next epoch."""
    judged = torch.load(directory / MODEL_FILE, weights_only=True)["state_dict"]
    state = torch.load(directory / TRAINING_STATE_FILE, weights_only=True)
    learner.core.load_state_dict(state.get("raw_state_dict", judged))  # with an average, the model file holds the average
    learner.optimizer.load_state_dict(state["optimizer"])
    if learner.average is not None:  # go on averaging from the saved average, with its count of steps
        learner.average.module.load_state_dict(judged)
        learner.average.n_averaged.fill_(state["ema_updates"])
    stopping.best, stopping.stale = state["best"], state["stale"]
    return state["epoch"] + 1


def intact(checkpoint: Path) -> bool:
    """Both files of a checkpoint present and whole: ``torch.save`` writes zip archives, whose CRCs a cut-short file fails."""
    try:
        for name in (MODEL_FILE, TRAINING_STATE_FILE):
            with zipfile.ZipFile(checkpoint / name) as archive:
                if archive.testzip() is not None:
                    return False
    except (OSError, zipfile.BadZipFile):
        return False
    return True


def resume_point(latest: Path, run_dir: Path) -> Path | None:
    """``latest`` when it is whole, else the newest whole checkpoint of the run (said in one line on stderr); None
    when none is."""
    if intact(latest):
        return latest
    earlier = [p for p in reversed(checkpoint_dirs(run_dir)) if p.name != latest.name and intact(p)]
    if earlier:
        print(f"tamor: checkpoint {latest} is unreadable; resuming from {earlier[0]}", file=sys.stderr)
    return earlier[0] if earlier else None


def check_resumable(run_dir: Path) -> None:
    """:class:`CheckpointError` in one line when the run has checkpoints and none is whole (checked on the driver)."""
    found = checkpoint_dirs(run_dir)
    if found and not any(intact(p) for p in found):
        raise CheckpointError(f"no checkpoint of {run_dir} can be read ({', '.join(p.name for p in found)}: cut short "
                              f"or missing {MODEL_FILE} / {TRAINING_STATE_FILE}); start the run again under another --name")


def trim_epochs(run_dir: Path, start_epoch: int) -> None:
    """Drop the epoch log's lines from ``start_epoch`` on: epochs a resume trains again (after a kill between the
    log line and its checkpoint, or a fallback to an older checkpoint) are logged once."""
    log = run_dir / EPOCHS_FILE
    if not log.exists():
        return
    lines = [line for line in log.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] < start_epoch]
    staged = log.with_suffix(".tmp")
    staged.write_text("".join(line + "\n" for line in lines))
    os.replace(staged, log)


def best_intact(ranked: list[tuple[str, dict]], metric: str, mode: str) -> tuple[str, dict]:
    """The best ``(path, metrics)`` by ``metric`` among whole checkpoints (NaN ranks last)."""
    worst = float("-inf") if mode == "max" else float("inf")

    def score(item: tuple[str, dict]) -> float:
        value = item[1].get(metric, worst)
        return value if value == value else worst

    for path, metrics in sorted(ranked, key=score, reverse=mode == "max"):
        if intact(Path(path)):
            return path, metrics
    raise CheckpointError(f"none of the run's {len(ranked)} kept checkpoints can be read")


def remove_orphans(run_dir: Path, kept: set[str]) -> list[Path]:
    """Delete checkpoint directories the finished run does not keep (left by a driver killed right after writing
    one); the removed ones."""
    orphans = [p for p in checkpoint_dirs(run_dir) if str(p) not in kept and str(p.resolve()) not in kept]
    for p in orphans:
        shutil.rmtree(p, ignore_errors=True)
    return orphans
