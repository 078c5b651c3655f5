"""Ray Train: DDP on two CPU workers, checkpoints, recovery from a worker failure, explicit resume,
W&B offline tracking, evaluation and the paper's table."""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import TINY, FailOnce, read_offline_history, session_actors
from tamor.models.errors import TamorError
from tamor.models.factory import load_model
from tamor.models.feature_spec import FeatureSpec
from tamor.platform.checkpoints import check_resumable, checkpoint_dirs
from tamor.platform.data_dir import DataDir
from tamor.platform.evaluate import evaluate_checkpoint, write_comparison
from tamor.platform.preprocess import parquet_rows
from tamor.platform.run_files import RUN_FILE, TRAINING_STATE_FILE, read_epochs
from tamor.platform.step import weight_average
from tamor.platform.train import TrainConfig, build_trainer, claim_run, epoch_batches, hold_run, read_split, train


def config(data, tmp_path, **kw) -> TrainConfig:
    base = dict(data_dir=str(data), model=TINY, epochs=2, batch_size=1024, lr=0.01, storage_path=str(tmp_path))
    return TrainConfig(**{**base, **kw})


def epochs_run(summary) -> list[int]:
    return [e["epoch"] for e in read_epochs(summary["run_dir"])]


@pytest.fixture(scope="module")
def ddp_run(ray_session, synthetic_data, tmp_path_factory):
    return train(config(synthetic_data, tmp_path_factory.mktemp("runs"), num_workers=2))


def test_training_batches_are_shuffled_anew_every_epoch(ray_session):
    ds = ray_session.data.range(4000, override_num_blocks=4)
    cfg = TrainConfig(batch_size=400, shuffle_buffer=4000)

    def epoch(e: int, c: TrainConfig = cfg) -> np.ndarray:
        return np.concatenate([b["id"].numpy() for b in epoch_batches(ds.iterator(), c, e, 0, None)])

    first, second = epoch(0), epoch(1)
    assert sorted(first) == sorted(second) == list(range(4000))  # every row once per epoch
    assert not np.array_equal(first, second)  # a new order every epoch
    assert abs(np.corrcoef(first, np.arange(4000))[0, 1]) < 0.2  # far from the data (date) order
    unshuffled = epoch(0, cfg.model_copy(update={"shuffle_buffer": 0}))  # blocks may interleave, rows within them do not
    assert (np.diff(unshuffled) == 1).mean() > 0.99 and (np.diff(first) == 1).mean() < 0.05


def test_the_train_split_is_read_in_blocks_of_the_requested_rows_whatever_its_files_hold(synthetic_data):
    data = DataDir(synthetic_data)
    rows = parquet_rows(data.split("train"))
    spec = FeatureSpec.load(data.spec_file)
    ds = read_split(synthetic_data, "train", spec, block_rows=rows // 400).materialize()  # Ray's default: 200 blocks
    assert ds.count() == rows and ds.num_blocks() >= 400  # the epoch's shuffle mixes blocks: their size is its grain


def test_a_config_naming_unknown_tasks_or_metrics_is_refused(synthetic_data, tmp_path):
    with pytest.raises(TamorError, match="unknown task names \\['purchase'\\]"):
        build_trainer(config(synthetic_data, tmp_path, model=TINY.model_copy(update={"loss_weights": {"purchase": 2.0}})), "x")
    with pytest.raises(TamorError, match="unknown metric"):
        build_trainer(config(synthetic_data, tmp_path, metric="val_auc_purchase"), "x")


def test_distilling_from_a_train_split_without_teacher_columns_is_refused(synthetic_data, tmp_path):
    data = DataDir(tmp_path / "data")
    shutil.copytree(synthetic_data, data.root)
    train = pd.read_parquet(data.split("train"))
    assert {c for c in train.columns if c.startswith("teacher_")}  # `tamor preprocess` wrote them
    shutil.rmtree(data.split("train"))
    data.split("train").mkdir()
    train.drop(columns=[c for c in train.columns if c.startswith("teacher_")]).to_parquet(data.split("train") / "part.parquet")
    with pytest.raises(TamorError, match="no teacher columns"):
        build_trainer(config(data.root, tmp_path), "x")
    build_trainer(config(data.root, tmp_path, distill=0.0), "x")  # the labels alone need no teacher


def test_two_workers_train_report_and_checkpoint(ddp_run):
    assert epochs_run(ddp_run) == [0, 1]
    assert ddp_run["best_metrics"]["val_auc_mean"] > 0.6
    model = load_model(ddp_run["best_checkpoint"])
    assert model.config == TINY
    assert model.calibration is not None and model.calibration.tasks == model.tasks  # fitted on validation, served with it


def test_two_workers_each_validate_a_shard_and_share_the_metrics(ddp_run, synthetic_data):
    """No worker reads the whole validation split: each scores its shard, the metrics come from all of them."""
    valid_rows = len(pd.read_parquet(DataDir(synthetic_data).split("valid"), columns=["tier"]))
    for epoch in read_epochs(ddp_run["run_dir"]):
        workers = epoch["workers"]
        rows = [w["rows"] for w in workers]
        assert sorted(w["rank"] for w in workers) == [0, 1]
        assert rows[0] == rows[1] and valid_rows - 2 < sum(rows) <= valid_rows  # equal shards, < 2 rows left out
        assert epoch["val_rows"] == sum(rows) and all(w["peak_rss_mb"] > 0 for w in workers)


def test_best_checkpoint_evaluates_per_task_tier_and_scenario(ddp_run, synthetic_data):
    metrics = evaluate_checkpoint(ddp_run["best_checkpoint"], synthetic_data)
    assert set(metrics["slice"]) == {"overall", "tier", "scenario"}
    overall = metrics[metrics["slice"] == "overall"].set_index("task")["auc"]
    assert overall.mean() > 0.6 and overall["high_holding"] > 0.7


def test_wandb_offline_run_holds_the_logged_metrics(ddp_run):
    history = read_offline_history(ddp_run["run_dir"])
    logged = [row for row in history if "val_auc_mean" in row]
    assert [row["epoch"] for row in logged] == [0, 1]
    assert logged[-1]["val_auc_mean"] == pytest.approx(ddp_run["last_metrics"]["val_auc_mean"])
    # one series per task × tier cell, for the dashboard's "does a tier lag?" panel
    assert {"val_auc_tier/click/new", "val_auc_tier/high_holding/high"} <= set(logged[-1])


def test_evaluation_serving_and_ab_runs_share_the_demo_group(tmp_path):
    from tamor.platform.tracking import RunGroup, log_ab, log_evaluation

    table = pd.DataFrame({"task": ["click"], "tier": ["new"], "auc_tamor": [0.7], "auc_mmoe": [0.6], "lift_pct": [16.7]})
    runs = RunGroup("demo-x", tmp_path / "wandb")
    log_evaluation(runs, table)
    daily = pd.DataFrame({"day": [0, 0, 1, 1], "arm": ["tamor", "mmoe"] * 2, "visitors": [10, 11, 12, 9], "invests": [1, 1, 2, 0],
                          "new_high_holding": [3, 2, 4, 1]})
    log_ab(runs, daily, {"lift": 0.3, "ci95": [0.1, 0.5]})
    series = []
    for _ in range(60):  # W&B's service writes the run file asynchronously: under load it lands after finish()
        series = [row["new_high_holding/tamor"] for row in read_offline_history(tmp_path / "wandb") if "new_high_holding/tamor" in row]
        if series:
            break
        time.sleep(0.5)
    assert series == [3, 4]
    metadata = "".join(p.read_text(errors="ignore") for p in (tmp_path / "wandb").rglob("*.wandb"))
    assert "demo-x" in metadata and "evaluate" in metadata and "ab" in metadata


def test_a_worker_failure_recovers_from_the_last_checkpoint(ray_session, synthetic_data, tmp_path):
    # with a moving average of the weights: the checkpoint's model is the average, the raw weights are kept to go on from
    summary = train(config(synthetic_data, tmp_path, max_failures=1, ema_decay=0.9, name="fails"),
                    loop=FailOnce(1))
    assert (tmp_path / "fails" / ".failed_at_1").exists()  # it did fail
    assert epochs_run(summary) == [0, 1]  # and went on from epoch 0's checkpoint, not from scratch
    served = load_model(summary["best_checkpoint"]).state_dict()
    raw = torch.load(Path(summary["best_checkpoint"]) / TRAINING_STATE_FILE, weights_only=True)["raw_state_dict"]
    assert served.keys() == raw.keys()
    assert any(not torch.equal(served[k], raw[k]) for k in raw)  # what is served is not the last step's weights
    state = torch.load(Path(summary["best_checkpoint"]) / TRAINING_STATE_FILE, weights_only=True)
    assert state["ema_updates"] > 1  # the resumed average goes on with its count of steps, not as if new


def test_the_weight_average_warms_up_to_its_decay():
    net = torch.nn.Linear(2, 1, bias=False)
    average = weight_average(net, 0.99)
    expected = 0.0
    for update in range(1, 1001):
        with torch.no_grad():
            net.weight.fill_(float(update))
        average.update_parameters(net)
        keep = 0.0 if update == 1 else min(0.99, update / (9 + update))  # the first update copies
        expected = keep * expected + (1 - keep) * update
        if update in (2, 10, 100, 1000):
            assert average.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-4), update
        if update == 10:  # early on it follows the weights: a short run is not judged on its first steps' weights
            assert average.module.weight[0, 0].item() > 6  # a plain 0.99 average would still be at 1.4
    assert weight_average(net, 0.0) is None


def test_the_weight_average_keeps_batchnorm_statistics_of_the_averaged_weights():
    # a peer's BatchNorm (torch-rechub's towers): the raw model's running statistics do not fit the averaged weights
    net = torch.nn.BatchNorm1d(2)
    average = weight_average(net, 0.9)
    for step in (1.0, 2.0, 3.0):
        with torch.no_grad():
            net.running_mean.fill_(step)
            net.num_batches_tracked.fill_(int(step))
        average.update_parameters(net)
    keep2, keep3 = 2 / 11, 3 / 12  # the warm-up's decay at the second and third update
    expected = keep3 * (keep2 * 1 + (1 - keep2) * 2) + (1 - keep3) * 3
    assert torch.allclose(average.module.running_mean, torch.full((2,), expected))
    assert int(average.module.num_batches_tracked) == 3  # a count is copied, not averaged


def test_the_weight_average_leaves_constant_buffers_as_they_are():
    net = torch.nn.Linear(2, 1)
    net.register_buffer("edges", torch.tensor([-float("inf"), 0.0, float("inf")]))  # as the numeric bins' outer edges
    average = weight_average(net, 0.9)
    for _ in range(3):
        average.update_parameters(net)
    assert torch.equal(average.module.edges, net.edges)  # not inf − inf = NaN


def actor_classes_started_by(run: Callable[[], dict]) -> tuple[dict, set[str]]:
    """What ``run`` returns, and the classes of the Ray actors started while it ran (Ray's state API)."""
    before = {a.actor_id for a in session_actors()}
    result = run()
    return result, {a.class_name for a in session_actors() if a.actor_id not in before}


def test_resume_continues_from_the_saved_epoch_and_paper_table(ray_session, synthetic_data, tmp_path, ddp_run):
    mmoe = TINY.model_copy(update={"name": "mmoe"})
    first, started = actor_classes_started_by(lambda: train(config(synthetic_data, tmp_path, model=mmoe, epochs=2, name="resumable")))
    assert epochs_run(first) == [0, 1]
    # one worker reads its splits itself, and a private Ray has no node to preempt: no actor to start for either
    assert "TrainController" in started and not started & {"SplitCoordinator", "PreemptionWatcher"}, started
    run_dir = Path(first["run_dir"])
    latest = checkpoint_dirs(run_dir)[-1]
    (latest / TRAINING_STATE_FILE).write_bytes((latest / TRAINING_STATE_FILE).read_bytes()[:500])  # cut short on disk
    (run_dir / "checkpoint_9999-orphan").mkdir()  # as a driver killed right after writing a checkpoint leaves one
    again = train(config(synthetic_data, tmp_path, model=mmoe, epochs=3, name="resumable"))
    # resumed from the newest whole checkpoint, epoch 0's: epoch 0 not trained again, epoch 1 trained again and logged once
    assert epochs_run(again) == [0, 1, 2]
    assert Path(again["best_checkpoint"]) != latest and not (run_dir / "checkpoint_9999-orphan").exists()
    # TAMOR (the DDP run) against this MMoE: the paper's table, 5 tasks x 3 tiers
    a = evaluate_checkpoint(ddp_run["best_checkpoint"], synthetic_data)
    b = evaluate_checkpoint(again["best_checkpoint"], synthetic_data)
    table = write_comparison(a, b, "tamor", "mmoe", tmp_path / "table")
    assert len(table) == 15
    assert {"paper_table.md", "paper_table.csv", "paper_table.png"} <= {p.name for p in (tmp_path / "table").iterdir()}
    assert pd.read_csv(tmp_path / "table" / "paper_table.csv")["lift_pct"].notna().sum() >= 12


def test_a_taken_run_name_is_refused_for_another_run_and_a_finished_run_is_kept(ray_session, synthetic_data, tmp_path, ddp_run):
    run_dir = Path(ddp_run["run_dir"])
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    same = config(synthetic_data, run_dir.parent, num_workers=2, name=run_dir.name)
    assert train(same)["best_checkpoint"] == ddp_run["best_checkpoint"]  # finished: nothing retrained
    with pytest.raises(TamorError, match=r"taken by a run with other lr.*choose another --name"):
        train(same.model_copy(update={"lr": 0.5}))
    with pytest.raises(TamorError, match="taken by a run with other model"):
        train(same.model_copy(update={"model": TINY.model_copy(update={"name": "mmoe"})}))
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before  # nothing touched


def test_a_run_whose_checkpoints_are_all_unreadable_is_refused_in_one_line(tmp_path):
    run_dir = tmp_path / "broken"
    (run_dir / "checkpoint_000000").mkdir(parents=True)
    (run_dir / "checkpoint_000000" / TRAINING_STATE_FILE).write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(TamorError, match=r"no checkpoint of .*broken can be read \(checkpoint_000000: cut short"):
        check_resumable(run_dir)


def test_a_run_recorded_in_another_format_is_refused_in_one_line(tmp_path):
    run_dir, cfg = tmp_path / "old-run", TrainConfig(data_dir=str(tmp_path / "data"))
    assert claim_run(cfg, run_dir) is None  # a new run: its identity is recorded
    assert claim_run(cfg, run_dir) is None  # the same config and data: the same run, resumed
    recorded = json.loads((run_dir / RUN_FILE).read_text())
    del recorded["format"]  # as the first format recorded it
    (run_dir / RUN_FILE).write_text(json.dumps(recorded))
    with pytest.raises(TamorError, match=r"run format 1, and this tamor reads format 2: choose another --name"):
        claim_run(cfg, run_dir)


def test_a_second_start_of_a_run_being_trained_is_refused_and_touches_nothing(tmp_path):
    run_dir, cfg = tmp_path / "twin", TrainConfig(data_dir=str(tmp_path / "data"))
    with hold_run(run_dir):  # the first start holds the run while it trains
        claim_run(cfg, run_dir)
        before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir()}
        with pytest.raises(TamorError, match="is being trained by another process"):
            train(cfg.model_copy(update={"name": "twin", "storage_path": str(tmp_path)}))
        assert {p: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    with hold_run(run_dir):  # released when the first one ends
        pass


def test_a_diverging_loss_stops_with_the_epoch_and_step(ray_session, synthetic_data, tmp_path):
    with pytest.raises(TamorError, match=r"loss diverged at epoch 0 step \d+ \(lr 1e\+30\)"):
        train(config(synthetic_data, tmp_path, lr=1e30, max_failures=2, name="too-fast"))
