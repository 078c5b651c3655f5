"""Streamed metrics: the bins' AUC, log loss and calibration error are the exact ones', batch by batch or at once."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from helpers import make_spec
from tamor.models.metrics import expected_calibration_error
from tamor.models.score_histograms import ScoreHistograms


def predictions(n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2, 1.5, size=(n, 5))
    labels = (rng.uniform(size=logit.shape) < 1 / (1 + np.exp(-(logit + rng.normal(scale=0.5, size=logit.shape))))).astype(np.float32)
    probs = (1 / (1 + np.exp(-logit))).astype(np.float32)
    mask = (rng.uniform(size=logit.shape) < 0.9).astype(np.float32)
    return probs, labels, mask, rng.integers(0, 3, n), rng.integers(0, 4, n)


def test_the_bins_give_the_exact_metrics_of_every_cell():
    probs, labels, mask, tier, scenario = predictions()
    table = ScoreHistograms(make_spec()).add(probs, labels, mask, tier, scenario).table().set_index(["task", "slice", "group"])
    for t, task in enumerate(make_spec().task_names):
        for kind, group, rows in [("overall", "all", np.ones(len(tier), bool)), ("tier", "high", tier == 2), ("scenario", "gold", scenario == 2)]:
            sel = rows & (mask[:, t] > 0)
            y, p = labels[sel, t], probs[sel, t]
            cell = table.loc[(task, kind, group)]
            assert cell["n"] == sel.sum() and cell["positives"] == y.sum()
            assert cell["auc"] == pytest.approx(roc_auc_score(y, p), abs=5e-5)  # ties within 1/1024 of a logit
            assert cell["logloss"] == pytest.approx(log_loss(y, p), rel=1e-5)
            assert cell["ece"] == pytest.approx(expected_calibration_error(y, p), abs=2e-3)


def test_batches_added_one_by_one_give_the_table_of_all_rows_at_once():
    probs, labels, mask, tier, scenario = predictions(6000, seed=1)
    whole = ScoreHistograms(make_spec()).add(probs, labels, mask, tier, scenario).table()
    streamed = ScoreHistograms(make_spec())
    for part in np.array_split(np.arange(6000), 7):
        streamed.add(probs[part], labels[part], mask[part], tier[part], scenario[part])
    metrics = ["n", "positives", "auc", "logloss", "ece"]
    np.testing.assert_allclose(streamed.table()[metrics].to_numpy(float), whole[metrics].to_numpy(float), rtol=1e-9)
