"""Starting (or joining) Ray the same way from the CLI, tests, benchmarks and `ray job submit`."""

from __future__ import annotations

import os

import ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local one bound to 127.0.0.1.

    Idempotent: a process that already has Ray initialised keeps it. Ray Data's progress bars stay on
    (they need ``tqdm``). The dashboard stays on: Tune over Train frees finished trials through it.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", include_dashboard=True, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
