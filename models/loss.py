"""The multi-task loss: Σ_t λ_t · BCE_t over the rows where task t is defined, against the labels or,
with ``distill`` α, against (1 − α) · label + α · the tree teacher's probability (``batch["teacher"]``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tamor.models.errors import TamorError
from tamor.models.feature_spec import FeatureSpec


class MultiTaskLoss(nn.Module):
    """A row counts for task t when its label is known (``label_mask``) and t is an objective for the
    row's tier (the spec's task × tier mask). Returns the weighted total and each task's mean BCE.
    With ``distill`` α > 0 the target is (1 − α) · label + α · ``batch["teacher"]`` ``[B, T]`` where the
    batch has it (training batches): the out-of-fold tree teacher's probabilities (``platform/teacher.py``).
    """

    def __init__(self, spec: FeatureSpec, weights: Mapping[str, float] | None = None, distill: float = 0.0):
        super().__init__()
        if not 0 <= distill <= 1:
            raise TamorError(f"distill must be in [0, 1], got {distill}")
        self.distill = float(distill)
        self.tasks = spec.task_names
        weights = dict(weights or {})
        unknown = set(weights) - set(self.tasks)
        if unknown:
            raise TamorError(f"loss weights for unknown tasks {sorted(unknown)}; tasks are {self.tasks}")
        self.register_buffer("weights", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))
        self.register_buffer("task_tier", torch.tensor(spec.task_tier_mask()))  # [T, G_u]

    def row_mask(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``[B, T]``: 1 where the row's label for the task counts."""
        return batch["label_mask"] * self.task_tier[:, batch["tier"]].T

    def forward(self, logits: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        stacked = torch.stack([logits[t] for t in self.tasks], dim=1).float()  # [B, T]
        mask = self.row_mask(batch)
        target = batch["labels"]
        if self.distill and "teacher" in batch:
            target = (1 - self.distill) * target + self.distill * batch["teacher"]
        bce = F.binary_cross_entropy_with_logits(stacked, target, reduction="none") * mask
        per_task = bce.sum(0) / mask.sum(0).clamp_min(1.0)
        total = (self.weights * per_task).sum()
        return total, {t: per_task[i].detach() for i, t in enumerate(self.tasks)}
