"""One W&B run per Tune trial (job type ``sweep``), logged from the Tune driver through :class:`Tracker`.

Tracking goes through the same :class:`~tamor.platform.tracking.Tracker` as every other run, so its mode
(offline, online, disabled) is an argument. Ray's ``WandbLoggerCallback`` reads offline mode from the
``WANDB_MODE`` environment variable only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from tamor.platform.tracking import Tracker, WandbMode


class TrialTracking(tune.Callback):
    """A Tune callback: at a trial's start a run holding its parameters (less ``excludes``), then every numeric
    result, finished when the trial ends or fails."""

    def __init__(self, mode: WandbMode, directory: str | Path, project: str, group: str, excludes: list[str]):
        self.mode, self.directory, self.project, self.group, self.excludes = mode, Path(directory), project, group, set(excludes)
        self.runs: dict[str, Tracker] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = {k: v for k, v in trial.config.items() if k not in self.excludes}
        self.runs[trial.trial_id] = Tracker(True, self.mode, self.directory, self.project, str(trial), params, group=self.group,
                                            job_type="sweep")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is not None:
            numbers = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            run.log(numbers)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finish(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finish(trial)

    def finish(self, trial: Any) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            run.finish()
