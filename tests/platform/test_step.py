"""The one training step (platform/step.py) that `tamor train` and every benchmark call: the epoch's shuffle,
the stopping rule, and what it trains — TAMOR's user-level tasks read what MMoE's read. No Ray."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from helpers import TINY, make_spec, planted_columns
from tamor.models.factory import build_model
from tamor.models.inputs import batch_from_columns
from tamor.platform.step import (
    EarlyStopping,
    Learner,
    calibrate,
    epoch_generator,
    evaluate_split,
    in_order,
    memory_epoch,
    predict_split,
    train_epoch,
    train_step,
    weight_average,
)
from tamor.platform.train_config import TrainConfig


def test_an_epoch_in_memory_visits_every_row_once_in_a_new_order_each_epoch():
    split = {"tier": torch.arange(5000), "id": torch.arange(5000)}

    def epoch(e: int, shuffle_buffer: int = 2000) -> np.ndarray:
        return torch.cat([b["id"] for b in memory_epoch(split, 250, shuffle_buffer, epoch_generator(0, e))]).numpy()

    first, second = epoch(0), epoch(1)
    assert sorted(first) == sorted(second) == list(range(5000))
    assert not np.array_equal(first, second)
    assert abs(np.corrcoef(first, np.arange(5000))[0, 1]) < 0.5  # windows in a random order, rows mixed within them
    assert np.array_equal(epoch(0), first)  # the same run, the same order
    assert np.array_equal(epoch(0, shuffle_buffer=0), np.arange(5000))  # 0: data order


def test_early_stopping_waits_patience_epochs_and_never_prefers_nan():
    stopping = EarlyStopping("max", patience=2)
    assert stopping.update(0.7) and stopping.update(0.72)
    assert not stopping.update(float("nan")) and not stopping.stop
    assert not stopping.update(0.71) and stopping.stop and stopping.best == 0.72
    assert EarlyStopping("min", 1).update(1.0)


def test_a_step_updates_the_weights_and_their_moving_average():
    spec = make_spec()
    learner = Learner.build(build_model(TINY, spec), spec, TrainConfig(model=TINY, lr=0.01), torch.device("cpu"))
    batch = batch_from_columns(spec, planted_columns(spec, 256, seed=0))
    before = {k: v.clone() for k, v in learner.core.state_dict().items()}
    loss = train_step(learner, batch)
    assert loss.ndim == 0 and not loss.requires_grad and torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in learner.core.state_dict().items())
    assert int(learner.average.n_averaged) == 1 and learner.judged is learner.average.module
    diverging = Learner.build(build_model(TINY, spec), spec, TrainConfig(model=TINY, lr=1e30), torch.device("cpu"))
    stats = train_epoch(diverging, [batch] * 50)
    assert stats.diverged and stats.steps < 50  # stops at the first non-finite loss


def test_the_moving_average_warms_up_and_keeps_a_constant_infinite_buffer_as_it_is():
    net = torch.nn.Linear(3, 1)
    net.register_buffer("edges", torch.tensor([-torch.inf, 0.5, torch.inf]))  # as a piecewise numeric's bounds
    average = weight_average(net, decay=0.99)
    expected = None
    for update in range(1, 8):
        with torch.no_grad():
            net.weight.add_(1.0)
        average.update_parameters(net)
        if expected is None:  # the first update copies the weights
            expected = net.weight.detach().clone()
        else:  # after n updates the average keeps (1 + n) / (10 + n) of itself
            n = update - 1
            keep = min(0.99, (1 + n) / (10 + n))
            expected = keep * expected + (1 - keep) * net.weight.detach()
        torch.testing.assert_close(average.module.weight, expected)
    assert torch.equal(average.module.edges, net.edges)  # inf − inf would have made them NaN


def test_validation_fits_the_calibration_that_the_predictions_then_go_through():
    spec = make_spec()
    learner = Learner.build(build_model(TINY, spec), spec, TrainConfig(model=TINY, lr=0.01), torch.device("cpu"))
    train_epoch(learner, [batch_from_columns(spec, planted_columns(spec, 256, seed=s)) for s in range(8)])
    valid = batch_from_columns(spec, planted_columns(spec, 4096, seed=99))
    raw = predict_split(learner.judged, [valid], learner.device)
    fitted = calibrate(learner.judged, raw)
    assert learner.judged.calibration is not None and learner.judged.calibration.tasks == spec.task_names
    np.testing.assert_allclose(predict_split(learner.judged, [valid], learner.device)["probs"], fitted["probs"], rtol=1e-5)
    for t in range(len(spec.task_names)):  # the maximum-likelihood map is never worse on what it was fitted to
        known = raw["label_mask"][:, t] > 0
        y = raw["labels"][known, t]
        assert log_loss(y, fitted["probs"][known, t], labels=[0, 1]) <= log_loss(y, raw["probs"][known, t], labels=[0, 1]) + 1e-6


def user_level_log(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Planted rows whose user-level label (high_holding) follows the page shown and the item, not the user."""
    spec = make_spec()
    cols = planted_columns(spec, n, seed)
    rng = np.random.default_rng(seed + 100)
    logit = 2.0 * (cols["f_page"] - 1.5) + np.sin(cols["f_item_id"] * 1.3)
    cols["label_high_holding"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return batch_from_columns(spec, cols)


@pytest.mark.parametrize("seed", [0])
def test_tamor_user_level_task_reads_the_context_and_item_as_mmoe_does(seed):

    spec = make_spec()
    train, test = user_level_log(20_000, seed), user_level_log(10_000, seed + 1)
    aucs = {}
    for name in ("mmoe", "tamor"):
        cfg = TrainConfig(model=TINY.model_copy(update={"name": name}), lr=3e-3, batch_size=256, seed=seed)
        torch.manual_seed(seed)
        learner = Learner.build(build_model(cfg.model, spec), spec, cfg, torch.device("cpu"))
        for epoch in range(3):
            train_epoch(learner, memory_epoch(train, cfg.batch_size, cfg.shuffle_buffer, epoch_generator(seed, epoch)))
        table = evaluate_split(learner.judged, in_order(test, 4096), spec, learner.device)
        aucs[name] = float(table.query("task == 'high_holding' and slice == 'overall'")["auc"].iloc[0])
        assert np.isfinite(aucs[name])
    assert aucs["mmoe"] > 0.75  # the label is learnable from the context and the item
    assert aucs["tamor"] >= aucs["mmoe"] - 0.005, aucs
