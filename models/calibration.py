"""Per-task Platt scaling: the map from a model's logits to calibrated probabilities.

Distillation pulls the logits toward the teacher's probabilities, which are not the labels' rates, so a
trained model's probabilities drift off the observed rates. A per-task ``sigmoid(scale · logit + shift)``,
fitted on the validation split after every epoch, puts them back. The map is increasing in the logit, so
every AUC (overall, per tier, per scenario) and every ranking is what it was; only log loss and the
calibration error change. A checkpoint and a registry version carry it beside the weights, so the
probabilities served are the ones evaluated.

Example:
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.normal(size=(20000, 1))
    >>> labels = (rng.uniform(size=truth.shape) < 1 / (1 + np.exp(-truth))).astype("float32")
    >>> cal = Calibration.fit(["click"], 2 * truth - 1, labels, np.ones_like(labels))  # logits off by × 2 − 1
    >>> [round(cal.scale[0], 1), round(cal.shift[0], 1)]
    [0.5, 0.5]
    >>> probabilities(torch.tensor([[1.0]]), Calibration(tasks=["click"], scale=[0.5], shift=[0.5]))  # sigmoid(0.5 · 1 + 0.5)
    tensor([[0.7311]])
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from tamor.models.metrics import JUDGED_POSITIVES


class Calibration(BaseModel):
    """``p[:, t] = sigmoid(scale[t] · logit[:, t] + shift[t])`` for each task ``t`` in ``tasks``' order."""

    model_config = ConfigDict(frozen=True)

    tasks: list[str]
    scale: list[float]
    shift: list[float]

    @classmethod
    def fit(cls, tasks: list[str], logits: np.ndarray, labels: np.ndarray, mask: np.ndarray,
            min_positives: int = JUDGED_POSITIVES) -> Calibration:
        """Fit on ``logits``, ``labels`` and ``mask`` ``[N, T]`` (a row counts for task ``t`` where ``mask`` is > 0).
        A task with fewer than ``min_positives`` of a class keeps its logits (scale 1, shift 0), as does one whose
        fitted scale is not positive: the map never reverses an order."""
        # imported here: a process that only applies a calibration (a Serve replica) starts without scikit-learn
        from sklearn.linear_model import LogisticRegression

        scale, shift = [1.0] * len(tasks), [0.0] * len(tasks)
        for t in range(len(tasks)):
            known = mask[:, t] > 0
            y, x = labels[known, t], logits[known, t].astype(np.float64).reshape(-1, 1)
            positives = int(y.sum())
            if min(positives, len(y) - positives) < min_positives:
                continue
            fitted = LogisticRegression(C=np.inf).fit(x, y)  # unpenalised: two parameters, thousands of rows
            if fitted.coef_[0, 0] > 0:
                scale[t], shift[t] = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
        return cls(tasks=tasks, scale=scale, shift=shift)

    def apply(self, logits: Tensor) -> Tensor:
        """Calibrated logits ``[B, T]`` of ``logits [B, T]``."""
        scale = torch.tensor(self.scale, dtype=logits.dtype, device=logits.device)
        shift = torch.tensor(self.shift, dtype=logits.dtype, device=logits.device)
        return logits * scale + shift


def probabilities(logits: Tensor, calibration: Calibration | None) -> Tensor:
    """Probabilities ``[B, T]`` (float32) of stacked task logits ``[B, T]``, calibrated when there is a map."""
    logits = logits.float()
    return torch.sigmoid(calibration.apply(logits) if calibration is not None else logits)
