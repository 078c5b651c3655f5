"""Starting (or joining) Ray the same way from the CLI, tests, benchmarks and `ray job submit`, and
keeping the console for people: Ray's and the workers' logs go to a log directory unless verbose."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import ray

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def init_ray(address: str | None = None, num_cpus: int | None = None, log_dir: str | Path | None = None,
             verbose: bool = True) -> Path | None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one bound to 127.0.0.1.

    Idempotent: a process that already has Ray initialised keeps it. With ``verbose=False`` the workers'
    output, Ray's INFO logs, progress bars and Python warnings stay off the console; with ``log_dir``
    they are written to ``log_dir/driver.log`` and ``log_dir/ray`` links to the Ray session's logs (every
    worker's stdout and stderr). Returns the driver log's path, if any. The dashboard stays on: Tune
    over Train frees finished trials through it.
    """
    log_file = _log_to(Path(log_dir), verbose) if log_dir is not None else None
    if not verbose:
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        warnings.filterwarnings("ignore")  # captured in the log file when there is one
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        level = logging.INFO if verbose else logging.WARNING
        if address:
            ray.init(address=address, log_to_driver=verbose, logging_level=level)
        else:
            ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=True, log_to_driver=verbose, logging_level=level)
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:
        quiet_console()
    if log_dir is not None:
        link = Path(log_dir) / "ray"
        session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        if not link.exists() and session_logs.exists():
            link.symlink_to(session_logs, target_is_directory=True)
    return log_file


def _log_to(log_dir: Path, verbose: bool) -> Path:
    """Every ``ray*`` and ``tamor*`` logger and Python warnings also write to ``log_dir/driver.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "driver.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.setLevel(logging.INFO)
    logging.captureWarnings(True)
    for name in ("ray", "tamor", "py.warnings"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return path


def quiet_console() -> None:
    """Console handlers of Ray's loggers show warnings and errors only (files keep everything); call it
    again after starting a library that adds handlers of its own (Serve)."""
    for name in ["ray", *[n for n in logging.root.manager.loggerDict if n.startswith("ray.")]]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
                handler.setLevel(logging.WARNING)
