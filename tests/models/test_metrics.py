"""Metrics: AUC / log loss per slice, skipped cells say why, and the paper's table with lifts."""

import numpy as np
import pytest

from helpers import make_spec
from tamor.models.metrics import evaluate_predictions, paper_table


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
