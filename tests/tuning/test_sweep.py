"""Ray Tune over Ray Train: ASHA stops a trial early, Optuna searches λ/τ/lr, the best is exported,
and an interrupted sweep resumes."""

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import TINY, FailOnce, read_offline_history
from tamor.models.errors import TamorError
from tamor.models.factory import load_model
from tamor.platform.objectives import TIER_TASK_WEIGHTS
from tamor.platform.registry import Registry
from tamor.platform.train import TrainConfig
from tamor.tuning.sweep import Range, SweepConfig, check_fits, ended_by, objective_weights, search_space, sweep, trial_train_config


def sweep_config(data, tmp_path, **kw) -> SweepConfig:
    train = TrainConfig(data_dir=str(data), model=TINY, epochs=2, batch_size=2048, cpus_per_worker=0.25, patience=3)
    base = dict(train=train, num_samples=4, max_concurrent=2, storage_path=str(tmp_path / "tune"),
                registry=str(tmp_path / "registry"), reduction_factor=2)
    return SweepConfig(**{**base, **kw})


def test_a_sweep_that_would_starve_ray_data_is_refused_up_front():
    cfg = SweepConfig(max_concurrent=3, train=TrainConfig(cpus_per_worker=0.5))
    with pytest.raises(TamorError, match="wait forever"):
        check_fits(cfg, cluster_cpus=2)
    check_fits(cfg.model_copy(update={"max_concurrent": 1}), cluster_cpus=2)


def test_trial_config_carries_lambda_tau_and_lr():
    params = {"lambda_click": 2.0, "lambda_invest": 0.5, "temperature": 0.1, "lr": 0.004}
    cfg = trial_train_config(TrainConfig(), params, ["click", "invest"])
    assert cfg.model.loss_weights == {"click": 2.0, "invest": 0.5}
    assert cfg.model.temperature == 0.1 and cfg.lr == 0.004


def test_the_correction_decay_is_searched_only_when_asked_and_reaches_the_model():
    assert "correction_decay" not in search_space(SweepConfig(), ["click"])
    space = search_space(SweepConfig(correction_decay=Range(low=0.1, high=30)), ["click"])
    assert space["correction_decay"].lower == 0.1 and space["correction_decay"].upper == 30
    params = {"lambda_click": 1.0, "temperature": 1.0, "lr": 0.001, "correction_decay": 7.0}
    assert trial_train_config(TrainConfig(), params, ["click"]).model.correction_decay == 7.0


def test_a_range_whose_ends_are_equal_fixes_its_parameter_and_a_reversed_one_is_refused():
    space = search_space(SweepConfig(loss_weight=Range(low=1, high=1), lr=Range(low=0.002, high=0.002)), ["click", "invest"])
    assert space["lambda_click"] == space["lambda_invest"] == 1 and space["lr"] == 0.002
    with pytest.raises(ValueError, match="above high"):
        Range(low=2, high=1)


def test_a_trial_says_whether_asha_the_trainers_patience_or_the_last_epoch_ended_it():
    train = TrainConfig(epochs=10, patience=2)

    def history(stale: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"training_iteration": range(1, len(stale) + 1), "stale_epochs": stale})

    assert ended_by(history([0, 0, 1, 2]), train) == "patience"
    assert ended_by(history([0, 0, 1]), train) == "asha"
    assert ended_by(history([0] * 10), train) == "epochs"


@pytest.fixture(scope="module")
def finished_sweep(ray_session, synthetic_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    # 4 trials, 2 at a time: ASHA (grace 1, factor 2) stops a trial that is below the median of those before it at a
    # rung. Optuna's seeded proposals give two trials a first epoch well below the other two's, so whatever the order
    # their reports arrive in, one of the two is stopped.
    cfg = sweep_config(synthetic_data, tmp, objective="business", num_samples=4, correction_decay=Range(low=0.1, high=30))
    return cfg, sweep(cfg)


def test_sweep_runs_asha_stops_early_and_exports_the_best(finished_sweep):
    cfg, summary = finished_sweep
    trials = pd.read_csv(Path(summary["path"]) / "trials.csv")
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all()
    assert (trials["epochs"] < 2).any(), "ASHA stopped no trial early"
    # patience 3 cannot end a 2-epoch trial, so every shorter one was ASHA's
    assert ((trials["ended"] == "asha") == (trials["epochs"] < 2)).all() and summary["stopped_early"] == (trials["epochs"] < 2).sum()
    assert trials["temperature"].nunique() == trials["correction_decay"].nunique() == 4  # Optuna proposed different τ and decays
    assert set(summary["best_params"]) >= {"temperature", "correction_decay", "lr"}
    version = Registry(cfg.registry).resolve("latest")
    assert version.meta["source"]["sweep"] == summary["name"]
    assert version.meta["metric_value"] == pytest.approx(trials["val_objective"].max())
    assert (Path(summary["path"]) / "trials.png").stat().st_size > 0


def test_exported_version_reloads_and_scores_a_batch(finished_sweep, synthetic_data):
    cfg, summary = finished_sweep
    model = load_model(Registry(cfg.registry).local_model_file("latest"))
    assert model.config.temperature == pytest.approx(summary["best_params"]["temperature"])
    frame = pd.read_parquet(synthetic_data / "test").head(64)
    from tamor.models.inputs import batch_from_columns

    probs = model.predict_proba(batch_from_columns(model.spec, {c: frame[c].to_numpy() for c in frame.columns}))
    assert probs.shape == (64, 5) and float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_each_trial_has_an_offline_wandb_run(finished_sweep):
    _, summary = finished_sweep
    history = read_offline_history(Path(summary["path"]) / "wandb")
    assert sum(1 for row in history if "val_objective" in row) >= 4


def test_the_business_objective_is_the_trade_off_the_reranker_serves():
    from tamor.serve.policy import RerankPolicy

    assert objective_weights(SweepConfig(objective="business")) == RerankPolicy().weights == TIER_TASK_WEIGHTS
    assert objective_weights(SweepConfig(objective="mean_auc")) is None
    assert TIER_TASK_WEIGHTS["low"]["large_invest"] > TIER_TASK_WEIGHTS["new"].get("large_invest", 0)


# Once in CI a trial whose trainer had failed never ended (Tune waited until the suite's timeout); 13 runs here did
# not repeat it. Bounded, with what Ray held printed (tests/conftest.py), and tried once more.
@pytest.mark.timeout(360, method="signal", func_only=True)  # per try: a rerun gets its own
@pytest.mark.flaky(reruns=1)
def test_an_interrupted_sweep_resumes(ray_session, synthetic_data, tmp_path):
    # The trial's trainer dies once at epoch 1 (max_failures=0 inside a sweep), so the first
    # fit ends with an errored trial: an interrupted sweep. Tuner.restore re-runs it; its trainer
    # run resumes from its own last checkpoint, so epoch 0 is not trained twice.
    cfg = sweep_config(synthetic_data, tmp_path, num_samples=1, registry=None, grace_period=2)  # 2 epochs: no ASHA stops
    first = sweep(cfg, loop=FailOnce(1))
    before = pd.read_csv(Path(first["path"]) / "trials.csv")
    assert (before["status"] == "ERROR").all()
    resumed = sweep(cfg, resume=first["name"])  # the same loop: each trial's run has its marker, so it goes on
    after = pd.read_csv(Path(resumed["path"]) / "trials.csv")
    assert (after["status"] == "TERMINATED").all() and len(after) == 1
    for log in (Path(first["path"]) / "trainer_runs").glob("*/epochs.jsonl"):
        epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
        assert epochs.count(0) == 1 and max(epochs) >= 1
