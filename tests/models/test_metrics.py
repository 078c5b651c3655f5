"""Metrics: AUC / log loss per slice, skipped cells say why, and the paper's table with lifts."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from helpers import make_spec
from tamor.models.metrics import evaluate_predictions, paired_auc_difference, paper_table, weighted_aucs


def fake_predictions(quality: float, seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=(n, 5)) < 0.3).astype(float)
    probs = np.clip(0.5 + quality * (labels - 0.5) + rng.normal(scale=0.3, size=(n, 5)), 0.01, 0.99)
    mask = np.ones((n, 5))
    return probs, labels, mask, rng.integers(0, 3, n), rng.integers(0, 4, n)


def test_metrics_cover_overall_tiers_and_scenarios():
    spec = make_spec()
    metrics = evaluate_predictions(spec, *fake_predictions(0.3))
    assert len(metrics) == 5 * (1 + 3 + 4)
    assert metrics["auc"].between(0.6, 1.0).all()
    assert metrics["logloss"].gt(0).all()


def test_cells_with_one_class_or_too_few_positives_are_skipped_with_a_note():
    spec = make_spec()
    probs, labels, mask, tier, scenario = fake_predictions(0.3)
    labels[tier == 2, 1] = 0  # no conversions among high-tier users
    mask[:, 4] = 0  # high_holding unknown everywhere
    metrics = evaluate_predictions(spec, probs, labels, mask, tier, scenario).set_index(["task", "slice", "group"])
    assert metrics.loc[("conversion", "tier", "high"), "note"] == "one class only"
    assert np.isnan(metrics.loc[("conversion", "tier", "high"), "auc"])
    assert metrics.loc[("high_holding", "overall", "all"), "note"] == "no rows"


def test_paper_table_reports_relative_lift_per_task_and_tier():
    spec = make_spec()
    better = evaluate_predictions(spec, *fake_predictions(0.5))
    worse = evaluate_predictions(spec, *fake_predictions(0.2))
    table = paper_table(better, worse)
    assert len(table) == 15 and list(table.columns) == ["task", "tier", "auc_tamor", "auc_mmoe", "lift_pct"]
    assert (table["lift_pct"] > 0).all()
    row = table.iloc[0]
    assert row["lift_pct"] == pytest.approx(100 * (row["auc_tamor"] / row["auc_mmoe"] - 1))


def test_paired_bootstrap_separates_a_real_difference_from_none():
    """A model better on every resample has an interval above 0; the same model against itself sits at 0, and
    two fits of equal quality give an interval that holds 0."""
    probs, labels, *_ = fake_predictions(0.5, n=1000)
    y = labels[:, 0]
    worse_on_same_rows = np.clip(0.5 + 0.2 * (y - 0.5) + np.random.default_rng(1).normal(scale=0.3, size=len(y)), 0.01, 0.99)
    better = paired_auc_difference(y, [probs[:, 0]], [worse_on_same_rows], resamples=200)
    assert 0 < better["low"] < better["diff"] < better["high"]
    itself = paired_auc_difference(y, [probs[:, 0]], [probs[:, 0]], resamples=50)
    assert itself == {"diff": 0.0, "low": 0.0, "high": 0.0}
    twins = [np.clip(0.5 + 0.3 * (y - 0.5) + np.random.default_rng(s).normal(scale=0.3, size=len(y)), 0.01, 0.99) for s in (2, 3, 4, 5)]
    level = paired_auc_difference(y, twins[:2], twins[2:], resamples=200)
    assert level["low"] < 0 < level["high"]
    with pytest.raises(ValueError, match="both classes"):
        paired_auc_difference(np.zeros(10), [np.ones(10)], [np.ones(10)])


def test_a_resample_scored_by_ranks_is_sklearns_auc_of_the_rows_drawn():
    """The bootstrap scores each resample from its counts (how often each row is drawn): the same AUC as
    ``roc_auc_score`` weighted by those counts, ties between a positive and a negative counting half."""
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=400) < 0.3).astype(int)
    p = np.round(rng.uniform(size=400) + 0.2 * y, 1)  # few distinct scores: many ties
    counts = rng.poisson(1.0, (400, 5))
    expected = [roc_auc_score(y, p, sample_weight=counts[:, r]) for r in range(5)]
    np.testing.assert_allclose(weighted_aucs(y, p, counts), expected, rtol=0, atol=1e-12)


def test_resampling_the_fits_widens_the_interval_by_the_seeds_spread():
    """One good and one poor fit against two middling ones: the rows alone call A ahead; drawing the fits too
    shows the difference rests on which seeds ran."""
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=20000) < 0.3).astype(float)

    def fit(quality: float, s: int) -> np.ndarray:
        return 0.5 + quality * (y - 0.5) + np.random.default_rng(s).normal(scale=0.3, size=len(y))

    a, b = [fit(0.5, 1), fit(0.2, 2)], [fit(0.3, 3), fit(0.3, 4)]  # AUC 0.88 and 0.68 against 0.76 twice
    rows_only = paired_auc_difference(y, a, b, resamples=100, resample_fits=False)
    with_fits = paired_auc_difference(y, a, b, resamples=100)
    assert rows_only["diff"] == with_fits["diff"]
    assert not rows_only["low"] <= 0 <= rows_only["high"]
    assert with_fits["low"] < 0 < with_fits["high"]
