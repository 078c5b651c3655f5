"""What every model shares: the task list, per-task towers, and the common interface.

Every model takes the same batch (see :mod:`tamor.models.inputs`) and returns the same
``dict task -> logit [B]``, so training, tuning, evaluation and serving never special-case a model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from tamor.models.calibration import Calibration, probabilities
from tamor.models.config import ModelConfig
from tamor.models.encoder import Encoder
from tamor.models.feature_spec import FeatureSpec
from tamor.models.inputs import FeatureInputs, batch_from_columns
from tamor.models.layers import mlp


class Towers(nn.Module):
    """One MLP tower per task: ``{task: [B, d_in(task)]} -> {task: logit [B]}``."""

    def __init__(self, d_in: Mapping[str, int], dims: list[int], dropout: float = 0.0):
        super().__init__()
        self.towers = nn.ModuleDict(
            {t: nn.Sequential(mlp(d, dims, dropout), nn.Linear(dims[-1] if dims else d, 1)) for t, d in d_in.items()}
        )

    def forward(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {t: tower(x[t]).squeeze(-1) for t, tower in self.towers.items()}


class MultiTaskModel(nn.Module):
    """Base class: subclasses implement :meth:`forward` and :meth:`representations`."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig):
        super().__init__()
        self.spec, self.config = spec, config
        self.tasks = spec.task_names
        self.inputs = FeatureInputs(spec, config.embedding_dim, config.numeric_embedding)
        self.encoder: Encoder | None = None  # the raw-value encoder of the data it is trained on
        self.calibration: Calibration | None = None  # fitted on validation by training; None: raw sigmoid

    def joint_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        """User, item and context inputs concatenated: ``[B, d_user + d_item + d_context]``."""
        return torch.cat([self.inputs(batch, s) for s in ("user", "item", "context")], dim=-1)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups (``torch.optim.AdamW(model.parameter_groups(wd), lr=...)``):
        one, decaying by ``weight_decay``; a model may decay some of its parts more."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    @property
    def joint_dim(self) -> int:
        return sum(self.inputs.dims.values())

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Named ``[B, d]`` representations (tier-aware / tier-agnostic) for plots such as Fig. 3."""
        raise NotImplementedError

    def gate_distributions(self) -> dict[str, Tensor]:
        """Mean gate weights from the last forward pass (expert utilisation); empty if no gates."""
        return {}

    @torch.inference_mode()  # no autograd bookkeeping at all: cheaper than no_grad for the small batches serving scores
    def predict_proba(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Task probabilities in the spec's task order, through the model's calibration: ``[B, T]`` (an inference
        tensor: read it, or ``clone()`` it before changing it in place)."""
        logits = self(batch)
        return probabilities(torch.stack([logits[t] for t in self.tasks], dim=1), self.calibration)

    def predict_columns(self, cols: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> np.ndarray:
        """:meth:`predict_proba` of encoded columns (each ``[N]``, as the encoder and the feature store give them),
        as NumPy: ``[N, T]``."""
        return self.predict_proba(batch_from_columns(self.spec, cols, device=device)).cpu().numpy()
