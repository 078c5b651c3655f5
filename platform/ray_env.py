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
        quiet_console()  # before ray.init too: its own start-up notices
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        warnings.filterwarnings("ignore")  # captured in the log file when there is one
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        level = logging.INFO if verbose else logging.WARNING
        if address and address != "local":
            ray.init(address=address, log_to_driver=verbose, logging_level=level)
        else:  # a private cluster, never one that `ray start` left on the machine
            ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=True, log_to_driver=verbose, logging_level=level)
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:
        quiet_console()
        _route_cluster_messages()
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


_NOTICES = ("Token authentication is enabled", "Progress bars disabled", "may be a performance bottleneck")


def _drop_notices(record: logging.LogRecord) -> bool:
    """Ray's start-up notices that say nothing is wrong (the file log keeps them)."""
    return not any(notice in record.getMessage() for notice in _NOTICES)


# Messages the cluster pushes to the driver that say nothing is wrong: they go to the log file only.
_CLUSTER_NOISE = ("worker processes have been started", "Failed to kill actor", "is shutting down")


def _route_cluster_messages() -> None:
    """Ray prints the cluster's messages to the driver (``(raylet) …``) straight to stdout; keep the
    ones that mean something on the console and send every one to the log."""
    from ray._private import worker

    original = getattr(worker.print_to_stdstream, "__wrapped__", worker.print_to_stdstream)

    def print_to_stdstream(data, ignore_prefix: bool):
        lines = [line for line in data.get("lines", []) if not any(noise in line for noise in _CLUSTER_NOISE)]
        for line in data.get("lines", []):
            logging.getLogger("ray").info("(%s) %s", data.get("pid"), line)
        if lines:
            original({**data, "lines": lines}, ignore_prefix)

    print_to_stdstream.__wrapped__ = original
    worker.print_to_stdstream = print_to_stdstream


def quiet_console() -> None:
    """Console handlers of Ray's loggers show warnings and errors only (files keep everything); call it
    again after starting a library that adds handlers of its own (Serve)."""
    for name in ["ray", *[n for n in logging.root.manager.loggerDict if n.startswith("ray.")]]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
                # Ray Data logs a failed task's traceback at ERROR before raising it; the CLI says it in one line
                handler.setLevel(logging.CRITICAL if name.startswith("ray.data") else logging.WARNING)
                handler.addFilter(_drop_notices)
