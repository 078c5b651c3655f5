"""The calibration map (models/calibration.py): it fixes planted miscalibration per tier, keeps the order within a tier,
and travels with the model file into predict_proba."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import make_spec, planted_columns
from tamor.models.calibration import Calibration, probabilities
from tamor.models.config import ModelConfig
from tamor.models.factory import build_model, load_model, save_model
from tamor.models.inputs import batch_from_columns
from tamor.models.metrics import expected_calibration_error


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn at sigmoid(z) ``[n, 1]``, tiers ``[n]``, and logits that say 3z + 1.5 in tier 0 and z − 1 in tier 1:
    overconfident and too high in one tier, too low in the other."""
    rng = np.random.default_rng(seed)
    z, tier = rng.normal(-1.0, 1.0, size=(n, 1)), rng.integers(0, 2, n)
    labels = (rng.uniform(size=z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return np.where(tier[:, None] == 0, 3 * z + 1.5, z - 1), labels, tier


def test_the_map_undoes_planted_miscalibration_in_each_tier_and_keeps_the_order_within_it():
    logits, labels, tier = planted(40_000)
    fit_on, test = slice(0, 20_000), slice(20_000, None)
    cal = Calibration.fit(["click"], 2, logits[fit_on], labels[fit_on], np.ones_like(labels[fit_on]), tier[fit_on])
    raw = probabilities(torch.from_numpy(logits[test]), torch.from_numpy(tier[test]), None).numpy()[:, 0]
    fixed = probabilities(torch.from_numpy(logits[test]), torch.from_numpy(tier[test]), cal).numpy()[:, 0]
    for k in (0, 1):
        rows = tier[test] == k
        y = labels[test][rows, 0]
        assert expected_calibration_error(y, fixed[rows]) < 0.02 < expected_calibration_error(y, raw[rows])
        assert roc_auc_score(y, fixed[rows]) == pytest.approx(roc_auc_score(y, raw[rows]), abs=1e-6)  # float32 ties only
    np.testing.assert_allclose(cal.scale[0], [1 / 3, 1.0], atol=0.06)
    np.testing.assert_allclose(cal.shift[0], [-0.5, 1.0], atol=0.1)


def test_a_tier_too_rare_takes_its_tasks_map_and_a_task_too_rare_or_reversed_keeps_its_logits():
    logits, labels, tier = planted(5_000)
    rare = np.zeros_like(labels)
    rare[:20] = 1
    reversed_labels = (logits < 0).astype(np.float32)  # a higher logit, a lower rate
    tier = np.where(np.arange(5_000) < 4_900, tier, 2)  # tier 2: 100 rows, too few positives for a map of its own
    cal = Calibration.fit(["click", "rare", "reversed"], 3, np.hstack([logits] * 3), np.hstack([labels, rare, reversed_labels]),
                          np.ones((5_000, 3)), tier)
    whole = Calibration.fit(["click"], 1, logits, labels, np.ones_like(labels), None)
    assert (cal.scale[0][2], cal.shift[0][2]) == (whole.scale[0][0], whole.shift[0][0])
    assert cal.scale[1:] == [[1.0] * 3] * 2 and cal.shift[1:] == [[0.0] * 3] * 2


def test_a_saved_model_carries_its_calibration_into_predict_proba(tmp_path):
    spec = make_spec()
    batch = batch_from_columns(spec, planted_columns(spec, 64, seed=1))
    model = build_model(ModelConfig(name="tamor", embedding_dim=4, expert_dims=[8], tower_dims=[4]), spec).eval()
    scale = [[0.5 + k for k in range(len(spec.tiers))] for _ in spec.task_names]
    cal = Calibration(tasks=spec.task_names, scale=scale, shift=[[-1.0] * len(spec.tiers)] * len(spec.task_names))
    model.calibration = cal
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.calibration == cal
    logits = torch.stack([model(batch)[t] for t in spec.task_names], dim=1)
    expected = torch.sigmoid((0.5 + batch["tier"].float())[:, None] * logits - 1.0)
    torch.testing.assert_close(loaded.predict_proba(batch), expected)
