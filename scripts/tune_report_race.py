"""Why `tamor tune` does not use Ray's `TuneReportCallback`: a Tune trial whose last Train report is still
queued as `fit()` returns hangs for ever. Rerun this after a Ray upgrade to see whether it still does.

    python scripts/tune_report_race.py            # tamor's path (tuning/trial_reports.py): finishes
    python scripts/tune_report_race.py --ray      # Ray's path: prints "hung" after --limit seconds

A stand-in for Ray Train's controller puts 3 epoch reports the way `TuneReportCallback.after_report`
does (one-slot queue, blocking put), and a Tune callback takes 1 s per result, as Tune's loggers,
checkpoints and W&B do on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import ray
from ray import tune
from ray.train._internal.session import get_session
from ray.util.queue import Queue

from tamor.tuning.trial_reports import fit_and_report


@ray.remote(num_cpus=0)
class Controller:
    def run(self, reports, epochs: int) -> str:
        for epoch in range(epochs):
            reports.put({"epoch": epoch})
        return "fitted"


def make_trial(ray_path: bool):
    def trial(config):
        controller = Controller.remote()
        if ray_path:  # what TuneReportCallback does: the trial actor's main thread re-reports each item
            ray.get(controller.run.remote(get_session()._get_or_create_inter_actor_queue(), 3))
        else:
            reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
            fit_and_report(lambda: ray.get(controller.run.remote(reports, 3)), reports, tune.report)

    return trial


class SlowDriver(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        time.sleep(1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ray", action="store_true", help="Ray's TuneReportCallback path instead of tamor's")
    p.add_argument("--limit", type=float, default=60.0, help="seconds before calling it hung")
    args = p.parse_args()
    ray.init(address="local", num_cpus=2, log_to_driver=False)
    tuner = tune.Tuner(tune.with_resources(make_trial(args.ray), {"cpu": 0.1}), tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(callbacks=[SlowDriver()], storage_path=tempfile.mkdtemp(), verbose=0))
    fitted: dict = {}
    start = time.perf_counter()
    runner = threading.Thread(target=lambda: fitted.update(grid=tuner.fit()), daemon=True)
    runner.start()
    runner.join(timeout=args.limit)
    path = "Ray's TuneReportCallback" if args.ray else "tamor's trial_reports"
    if "grid" not in fitted:
        print(f"{path}: hung (no end after {args.limit:.0f} s)", flush=True)
        os._exit(1)  # the hung trial actor would keep ray.shutdown waiting
    epochs = list(fitted["grid"][0].metrics_dataframe["epoch"])
    print(f"{path}: finished in {time.perf_counter() - start:.1f} s, epochs reported {epochs}")


if __name__ == "__main__":
    main()
