"""From preprocessed columns to tensors, and from tensors to per-side input vectors.

A batch is a dict of tensors (built by :func:`batch_from_columns`):

- ``cat_{side}``: int64 ``[B, C_side]`` categorical ids, for side in user / item / context
- ``num_{side}``: float32 ``[B, N_side]`` standardised numerics
- ``tier``, ``scenario``: int64 ``[B]``
- ``labels``, ``label_mask``: float32 ``[B, T]`` in the spec's task order (absent in serving)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from tamor.models.feature_spec import SIDES, FeatureSpec, Side


def batch_columns(spec: FeatureSpec, with_labels: bool = True) -> list[str]:
    """The Parquet columns a batch is built from."""
    cols = [f"f_{f.name}" for f in spec.categorical + spec.numeric] + ["tier", "scenario"]
    if with_labels:
        cols += [f"{p}_{t}" for t in spec.task_names for p in ("label", "mask")]
    return cols


def batch_from_columns(spec: FeatureSpec, cols: Mapping[str, np.ndarray], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Stack column arrays (each ``[B]``) into a model batch; labels are included when present."""

    def stack(names: list[str], dtype: np.dtype) -> Tensor:
        n = len(cols["tier"])
        arr = np.stack([np.asarray(cols[c], dtype=dtype) for c in names], axis=1) if names else np.zeros((n, 0), dtype)
        return torch.from_numpy(arr).to(device)

    batch: dict[str, Tensor] = {}
    for side in SIDES:
        batch[f"cat_{side}"] = stack([f"f_{f.name}" for f in spec.categorical_on(side)], np.int64)
        batch[f"num_{side}"] = stack([f"f_{f.name}" for f in spec.numeric_on(side)], np.float32)
    batch["tier"] = torch.tensor(np.asarray(cols["tier"], dtype=np.int64), device=device)
    batch["scenario"] = torch.tensor(np.asarray(cols["scenario"], dtype=np.int64), device=device)
    if f"label_{spec.task_names[0]}" in cols:
        batch["labels"] = stack([f"label_{t}" for t in spec.task_names], np.float32)
        batch["label_mask"] = stack([f"mask_{t}" for t in spec.task_names], np.float32)
    return batch


class FeatureInputs(nn.Module):
    """One embedding table per categorical field (shared by every tier and scenario) and one numeric
    projection per side. ``forward(batch, side) -> [B, dim(side)]``: the side's field embeddings
    and projected numerics, concatenated.
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int):
        super().__init__()
        self.embeddings = nn.ModuleDict(
            {f.name: nn.Embedding(f.vocab_size, embedding_dim) for f in spec.categorical}
        )
        self.side_fields = {side: [f.name for f in spec.categorical_on(side)] for side in SIDES}
        self.numeric = nn.ModuleDict(
            {side: nn.Linear(len(spec.numeric_on(side)), embedding_dim) for side in SIDES if spec.numeric_on(side)}
        )
        self.dims = {
            side: embedding_dim * (len(self.side_fields[side]) + (side in self.numeric)) for side in SIDES
        }

    def forward(self, batch: Mapping[str, Tensor], side: Side) -> Tensor:
        cat = batch[f"cat_{side}"]
        parts = [self.embeddings[name](cat[:, i]) for i, name in enumerate(self.side_fields[side])]
        if side in self.numeric:
            parts.append(self.numeric[side](batch[f"num_{side}"]))
        if not parts:
            return cat.new_zeros((cat.shape[0], 0), dtype=torch.float32)
        return torch.cat(parts, dim=-1)
