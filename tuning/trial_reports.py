"""Ray Train's epoch reports to Ray Tune, reported from the trial function's own thread.

Ray's ``TuneReportCallback`` puts each report on a queue that the trial actor's *main* thread drains
and re-reports, while the trial function's thread reports Tune's end-of-function marker itself when
``fit()`` returns. When the last epoch's report is still on that queue as ``fit()`` returns, the two
threads race for Tune's one-slot result queue; if the marker wins, the main thread blocks for ever
putting the last epoch behind it (seen in CI: a resumed sweep hung with the trial actor in
``_report_training_result → Queue.put`` and Tune waiting for it). Here the callback only queues, and
the trial function runs ``fit()`` in a helper thread and makes every ``tune.report`` itself, in
order, before it returns: nothing else ever reports.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from ray.train.v2.api.callback import UserCallback

CHECKPOINT_PATH_KEY = "checkpoint_path"  # the key TuneReportCallback uses; `tamor tune` reads it back
POLL_S = 0.5


class QueueReports(UserCallback):
    """Runs in the Train controller: each report's metrics (rank 0's, plus the checkpoint's path) go
    on ``reports`` (a ``ray.util.queue.Queue``; one slot, so training waits for Tune as with Ray's callback)."""

    def __init__(self, reports: Any):
        self.reports = reports

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        item = dict(metrics[0])
        if checkpoint:
            item[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.reports.put(item)


def fit_and_report(fit: Callable[[], Any], reports: Any, report: Callable[[dict[str, Any]], None]) -> Any:
    """Run ``fit`` in a daemon thread and ``report`` every item it queues on ``reports``, in order, from
    this thread; return once ``fit`` has returned and every item is reported (or raise what ``fit`` raised).

    The callback's put completes before the controller goes on, so once ``fit`` has returned every
    item is already queued: "done and empty" means all were reported. Daemon: a trial Tune stops
    (ASHA) exits from inside ``report`` and must not wait for the trainer.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fit()
        except BaseException as e:  # re-raised in the trial's thread, so Tune marks the trial errored
            outcome["error"] = e

    worker = threading.Thread(target=run, name="tamor-trial-fit", daemon=True)
    worker.start()
    while True:
        try:
            report(reports.get(timeout=POLL_S))
        except queue.Empty:  # ray.util.queue.Empty is a queue.Empty
            if not worker.is_alive() and reports.empty():
                break
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
