"""The calibration map (models/calibration.py): it fixes planted miscalibration, keeps every order, and travels
with the model file into predict_proba."""

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


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn at sigmoid(z) ``[n, 1]``, and logits that say 3z + 1.5: overconfident and too high."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.0, size=(n, 1))
    labels = (rng.uniform(size=z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return 3 * z + 1.5, labels


def test_the_map_undoes_planted_miscalibration_and_keeps_the_order():
    logits, labels = planted(20_000)
    fit_on, test = slice(0, 10_000), slice(10_000, None)
    cal = Calibration.fit(["click"], logits[fit_on], labels[fit_on], np.ones_like(labels[fit_on]))
    raw = probabilities(torch.from_numpy(logits[test]), None).numpy()[:, 0]
    fixed = probabilities(torch.from_numpy(logits[test]), cal).numpy()[:, 0]
    y = labels[test, 0]
    assert expected_calibration_error(y, fixed) < 0.02 < expected_calibration_error(y, raw)
    assert roc_auc_score(y, fixed) == pytest.approx(roc_auc_score(y, raw), abs=1e-6)  # float32 ties at the tails only
    np.testing.assert_allclose([cal.scale[0], cal.shift[0]], [1 / 3, -0.5], atol=0.05)


def test_a_task_too_rare_to_fit_or_whose_fit_would_reverse_the_order_keeps_its_logits():
    logits, labels = planted(5_000)
    rare = np.zeros_like(labels)
    rare[:20] = 1
    reversed_labels = (logits < 1.5).astype(np.float32)  # a higher logit, a lower rate
    cal = Calibration.fit(["rare", "reversed"], np.hstack([logits, logits]), np.hstack([rare, reversed_labels]),
                          np.ones((5_000, 2)))
    assert cal.scale == [1.0, 1.0] and cal.shift == [0.0, 0.0]


def test_a_saved_model_carries_its_calibration_into_predict_proba(tmp_path):
    spec = make_spec()
    batch = batch_from_columns(spec, planted_columns(spec, 64, seed=1))
    model = build_model(ModelConfig(name="tamor", embedding_dim=4, expert_dims=[8], tower_dims=[4]), spec).eval()
    cal = Calibration(tasks=spec.task_names, scale=[0.5] * len(spec.task_names), shift=[-1.0] * len(spec.task_names))
    model.calibration = cal
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.calibration == cal
    logits = torch.stack([model(batch)[t] for t in spec.task_names], dim=1)
    torch.testing.assert_close(loaded.predict_proba(batch), torch.sigmoid(0.5 * logits - 1.0))
