"""The files of a training run's directory (``storage_path/name``), named once, and the reader of its epoch log.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> _ = (run_dir / EPOCHS_FILE).write_text(json.dumps({"epoch": 0, "val_auc_mean": 0.7}) + "\\n")
    >>> [e["epoch"] for e in read_epochs(run_dir)]
    [0]
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_FILE = "run.json"  # the config and data fingerprint a run was started with: what a resume must match
RUN_FORMAT = 2  # run.json's format: a run recorded in another one is refused, not migrated
EPOCHS_FILE = "epochs.jsonl"  # one JSON line per epoch, for people, the CLI's progress and resume checks
SUMMARY_FILE = "summary.json"  # the finished run: best checkpoint and metrics
DIVERGED_FILE = "diverged.json"  # where the loss stopped being finite
LOCK_FILE = ".run.lock"  # held by the process training the run
TRAINING_STATE_FILE = "training_state.pt"  # in each checkpoint, beside the model file: what training goes on from


def read_epochs(run_dir: str | Path) -> list[dict]:
    """The run's epoch log, one dict per epoch reported (empty before the first)."""
    log = Path(run_dir) / EPOCHS_FILE
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
