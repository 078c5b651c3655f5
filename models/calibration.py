"""Platt scaling per task × tier: the map from a model's logits to calibrated probabilities.

Distillation pulls the logits toward the teacher's probabilities, which are not the labels' rates, so a
trained model's probabilities drift off the observed rates, and by a different amount in each tier. A
``sigmoid(scale · logit + shift)`` per task and tier, fitted on the validation split after every epoch, puts
them back. Each map is increasing in the logit, so the order of one user's candidates (one tier) and every
per-tier AUC stay as they are; rows of different tiers may change places (the overall AUC can move). A
checkpoint and a registry version carry the map beside the weights, so the probabilities served are the
ones evaluated.

Example:
    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> truth, tier = rng.normal(size=(20000, 1)), rng.integers(0, 2, 20000)
    >>> labels = (rng.uniform(size=truth.shape) < 1 / (1 + np.exp(-truth))).astype("float32")
    >>> cal = Calibration.fit(["click"], 2, 2 * truth - 1, labels, np.ones_like(labels), tier)  # logits off by × 2 − 1
    >>> np.round(cal.scale, 1).tolist(), np.round(cal.shift, 1).tolist()
    ([[0.5, 0.5]], [[0.5, 0.5]])
    >>> probabilities(torch.tensor([[1.0]]), torch.tensor([1]), Calibration(tasks=["click"], scale=[[1.0, 0.5]], shift=[[0.0, 0.5]]))
    tensor([[0.7311]])
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from tamor.models.metrics import JUDGED_POSITIVES


class Calibration(BaseModel):
    """``p[:, t] = sigmoid(scale[t][k] · logit[:, t] + shift[t][k])`` for task ``t`` (``tasks``' order) and tier ``k``."""

    model_config = ConfigDict(frozen=True)

    tasks: list[str]
    scale: list[list[float]]  # [T][K]
    shift: list[list[float]]  # [T][K]

    @classmethod
    def fit(cls, tasks: list[str], n_tiers: int, logits: np.ndarray, labels: np.ndarray, mask: np.ndarray,
            tier: np.ndarray | None, min_positives: int = JUDGED_POSITIVES) -> Calibration:
        """Fit on ``logits``, ``labels``, ``mask`` ``[N, T]`` (a row counts for task ``t`` where ``mask`` > 0) and ``tier
        [N]`` (None: one map per task for every tier). A tier with fewer than ``min_positives`` of a class takes its
        task's map; a task with too few keeps its logits (scale 1, shift 0), as does any map whose scale would not be
        positive: a map never reverses an order."""
        scale, shift = [], []
        for t in range(len(tasks)):
            known = mask[:, t] > 0
            overall = platt(logits[known, t], labels[known, t], min_positives) or (1.0, 0.0)
            cells = [platt(logits[known & (tier == k), t], labels[known & (tier == k), t], min_positives) if tier is not None else None
                     for k in range(n_tiers)]
            cells = [cell or overall for cell in cells]
            scale.append([a for a, _ in cells])
            shift.append([b for _, b in cells])
        return cls(tasks=tasks, scale=scale, shift=shift)

    def apply(self, logits: Tensor, tier: Tensor) -> Tensor:
        """Calibrated logits ``[B, T]`` of ``logits [B, T]`` for rows of tiers ``tier [B]``."""
        scale = torch.tensor(self.scale, dtype=logits.dtype, device=logits.device)  # [T, K]
        shift = torch.tensor(self.shift, dtype=logits.dtype, device=logits.device)
        tier = tier.to(logits.device).long()
        return logits * scale[:, tier].T + shift[:, tier].T


def platt(logits: np.ndarray, labels: np.ndarray, min_positives: int) -> tuple[float, float] | None:
    """``(scale, shift)`` of an unpenalised logistic fit of ``labels [n]`` on ``logits [n]``; None with fewer than
    ``min_positives`` of a class or a scale that is not positive."""
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < min_positives:
        return None
    fitted = LogisticRegression(C=np.inf).fit(logits.astype(np.float64).reshape(-1, 1), labels)  # two parameters, many rows
    return (float(fitted.coef_[0, 0]), float(fitted.intercept_[0])) if fitted.coef_[0, 0] > 0 else None


def probabilities(logits: Tensor, tier: Tensor, calibration: Calibration | None) -> Tensor:
    """Probabilities ``[B, T]`` (float32) of stacked task logits ``[B, T]`` for rows of tiers ``tier [B]``, calibrated
    when there is a map."""
    logits = logits.float()
    return torch.sigmoid(calibration.apply(logits, tier) if calibration is not None else logits)
