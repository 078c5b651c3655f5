"""A trial reports every epoch itself, in order, before it returns: the last epoch is never left on
the queue while the trial ends (the race that hung Ray's own callback)."""

import queue
import threading
import time

import pytest

from tamor.tuning.trial_reports import fit_and_report


def fake_fit(reports: queue.Queue, epochs: int, error: Exception | None = None, last_put_delay: float = 0.0):
    """Stands in for ``trainer.fit``: the controller's callback puts one item per epoch, blocking on the one slot."""

    def fit():
        for epoch in range(epochs):
            if epoch == epochs - 1:
                time.sleep(last_put_delay)
            reports.put({"epoch": epoch})
        if error:
            raise error
        return "result"

    return fit


def test_every_epoch_is_reported_in_order_from_the_calling_thread_before_it_returns():
    reports, seen = queue.Queue(maxsize=1), []
    caller = threading.get_ident()

    def report(item):
        assert threading.get_ident() == caller  # never from the fit thread
        seen.append(item["epoch"])
        time.sleep(0.01)  # Tune taking its time: the fit thread waits on the one slot meanwhile

    assert fit_and_report(fake_fit(reports, 5, last_put_delay=0.3), reports, report) == "result"
    assert seen == [0, 1, 2, 3, 4]


def test_a_failed_fit_is_raised_after_its_epochs_are_reported():
    reports, seen = queue.Queue(maxsize=1), []
    with pytest.raises(RuntimeError, match="worker died"):
        fit_and_report(fake_fit(reports, 2, RuntimeError("worker died")), reports, lambda item: seen.append(item["epoch"]))
    assert seen == [0, 1]


def test_a_trial_whose_last_epoch_is_still_queued_as_fit_returns_ends_with_every_epoch(ray_session, tmp_path):
    # Tune's driver takes a second per result (loggers, checkpoints, W&B on a busy machine), so the
    # trainer's last report is still queued when its fit() returns. Ray's TuneReportCallback path
    # (reports re-reported by the trial actor's main thread) hangs here for ever; ours finishes.
    from ray import tune
    from ray.util.queue import Queue

    @ray_session.remote(num_cpus=0)
    class Controller:  # Ray Train's controller: its callback puts each epoch's report, blocking on the one slot
        def run(self, reports, epochs: int) -> str:
            for epoch in range(epochs):
                reports.put({"epoch": epoch})
            return "fitted"

    def trial(config):
        reports, controller = Queue(maxsize=1, actor_options={"num_cpus": 0}), Controller.remote()
        fit_and_report(lambda: ray_session.get(controller.run.remote(reports, 3)), reports, tune.report)

    class SlowDriver(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            time.sleep(1.0)

    tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 0.1}), tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(callbacks=[SlowDriver()], storage_path=str(tmp_path), verbose=0))
    fitted: dict = {}
    runner = threading.Thread(target=lambda: fitted.update(grid=tuner.fit()), daemon=True)
    runner.start()
    runner.join(timeout=120)
    assert "grid" in fitted, "the trial hung with its last epoch queued"
    assert list(fitted["grid"][0].metrics_dataframe["epoch"]) == [0, 1, 2]
