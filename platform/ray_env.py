"""Starting (or joining) Ray the same way from the CLI, tests, benchmarks and `ray job submit`, and
keeping the console for people: Ray's and the workers' logs go to a log directory unless verbose."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Ray's own settings for a cluster of a few CPUs, as environment variables: a private cluster's workers inherit
# them, Ray Train passes its own from the driver to its controller (docs/decisions.md, "Ray's fixed costs"):
# the V1 Parquet reader (V2 lists footers through a pool of actors, a second or more per read) and Ray Train's
# controller polling its workers every 0.5 s, not 2. Ray Data's own shuffle (SHUFFLE_V2) stays: its tasks reserve
# memory per block, where the actor hash shuffle's aggregators reserve it from the whole data and, past a few GiB,
# wait for ever for room on one node (a 50 M-row log's snapshots did).
RAY_SETTINGS = {"RAY_DATA_USE_DATASOURCE_V2": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# A private one-machine cluster has no node to preempt: Ray Train need not start a preemption-watcher actor per run.
PRIVATE_RAY_SETTINGS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def apply_ray_settings() -> None:
    """:data:`RAY_SETTINGS` (unless the environment names others) in this process's environment, which the workers
    it starts inherit, and in its Ray Data context. Call it in every process that builds datasets or trainers."""
    for name, value in RAY_SETTINGS.items():
        os.environ.setdefault(name, value)
    context = ray.data.DataContext.get_current()
    context.use_datasource_v2 = os.environ["RAY_DATA_USE_DATASOURCE_V2"].lower() in ("1", "true")


def init_ray(address: str | None = None, num_cpus: int | None = None, log_dir: str | Path | None = None,
             verbose: bool = True) -> Path | None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a private local one, its dashboard on 127.0.0.1
    (Ray offers no public way to bind its other ports there; token authentication guards them: docs/serving.md).

    Idempotent: a process that already has Ray initialised keeps it. With ``verbose=False`` the workers'
    output, Ray's INFO logs, progress bars and Python warnings stay off the console; with ``log_dir``
    they are written to ``log_dir/driver.log`` and ``log_dir/ray`` links to the Ray session's logs (every
    worker's stdout and stderr). Returns the driver log's path, if any. The dashboard stays on: Tune
    over Train frees finished trials through it.
    """
    log_file = _log_to(Path(log_dir), verbose) if log_dir is not None else None
    if not verbose:
        quiet_console()  # before ray.init too: its own start-up notices
        _warnings_off_console()
    context = None
    apply_ray_settings()  # before Ray starts: a private cluster's workers inherit the environment
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        level = logging.INFO if verbose else logging.WARNING
        if address and address != "local":
            context = ray.init(address=address, log_to_driver=verbose, logging_level=level)
        else:  # a private cluster, never one that `ray start` left on the machine
            for name, value in PRIVATE_RAY_SETTINGS.items():
                os.environ.setdefault(name, value)
            context = ray.init(address="local", num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=True,
                               log_to_driver=verbose, logging_level=level)
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    if not verbose:
        quiet_console()
    if log_dir is not None and context is not None:
        link = Path(log_dir) / "ray"
        session_logs = Path(context.address_info["session_dir"]) / "logs"
        if not link.exists() and session_logs.exists():
            link.symlink_to(session_logs, target_is_directory=True)
    return log_file


def _warnings_off_console() -> None:
    """Python warnings go through logging (``py.warnings``): to the log file when there is one, not the console."""
    logging.captureWarnings(True)
    quiet = logging.getLogger("py.warnings")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())


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


def quiet_console() -> None:
    """Console handlers of Ray's loggers show warnings and errors only (files keep everything); call it
    again after starting a library that adds handlers of its own (Serve)."""
    for name in ["ray", *[n for n in logging.root.manager.loggerDict if n.startswith("ray.")]]:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
                # Ray Data logs a failed task's traceback at ERROR before raising it; the CLI says it in one line
                handler.setLevel(logging.CRITICAL if name.startswith("ray.data") else logging.WARNING)
                handler.addFilter(_drop_notices)
