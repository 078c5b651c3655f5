"""From preprocessed columns to tensors, and from tensors to per-side input vectors.

A batch is a dict of tensors (built by :func:`batch_from_columns`):

- ``cat_{side}``: int64 ``[B, C_side]`` categorical ids, for side in user / item / context
- ``num_{side}``: float32 ``[B, N_side]`` standardised numerics
- ``tier``, ``scenario``: int64 ``[B]``
- ``labels``, ``label_mask``: float32 ``[B, T]`` in the spec's task order (absent in serving)
- ``teacher``: float32 ``[B, T]``, the tree teacher's probabilities (train split, when distilling)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tamor.models.config import ModelConfig
from tamor.models.feature_spec import SIDES, FeatureSpec, Side


def batch_columns(spec: FeatureSpec, with_labels: bool = True, with_teacher: bool = False) -> list[str]:
    """The Parquet columns a batch is built from."""
    cols = [f"f_{f.name}" for f in spec.categorical + spec.numeric] + ["tier", "scenario"]
    if with_labels:
        cols += [f"{p}_{t}" for t in spec.task_names for p in ("label", "mask")]
    if with_teacher:
        cols += [f"teacher_{t}" for t in spec.task_names]
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
    if f"teacher_{spec.task_names[0]}" in cols:
        batch["teacher"] = stack([f"teacher_{t}" for t in spec.task_names], np.float32)
    return batch


class PeriodicEmbedding(nn.Module):
    """Each numeric feature its own vector: ``[B, N] -> [B, N·d]``.

    Feature j's standardised value x becomes ReLU(W_j [sin 2πc_j x, cos 2πc_j x, x] + b_j) with k
    learned frequencies c_j (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep
    Learning", 2022): an MLP sees thresholds in age or capital gains the way a tree does, instead of
    one linear projection of all numerics together.
    """

    def __init__(self, n_features: int, dim: int, frequencies: int = 8, sigma: float = 1.0):
        super().__init__()
        width = 2 * frequencies + 1
        self.frequencies = nn.Parameter(torch.randn(n_features, frequencies) * sigma)
        self.weight = nn.Parameter(torch.empty(n_features, width, dim).uniform_(-(width**-0.5), width**-0.5))
        self.bias = nn.Parameter(torch.zeros(n_features, dim))

    def forward(self, x: Tensor) -> Tensor:
        v = 2 * torch.pi * x.unsqueeze(-1) * self.frequencies  # [B, N, k]
        features = torch.cat([torch.sin(v), torch.cos(v), x.unsqueeze(-1)], dim=-1)  # [B, N, 2k+1]
        out = torch.relu(torch.einsum("bnk,nkd->bnd", features, self.weight) + self.bias)  # [B, N, d]
        return out.flatten(1)


DEFAULT_EDGES = (-2.0, -1.0, 0.0, 1.0, 2.0)  # standard-normal edges for a numeric fitted without bins


class PiecewiseLinearEmbedding(nn.Module):
    """Each numeric feature its own vector from its bins: ``[B, N] -> [B, N·d]``.

    Feature j with edges b_0 < … < b_T turns x into T numbers, bin t's share of
    [b_{t-1}, b_t] that x has passed (0 below, 1 above, linear within; the first bin open below, the last
    open above), then ReLU(W_j e + b_j) (Gorishniy et al. 2022, piecewise-linear encoding): a step at any
    edge, as a tree's split, but continuous. Edges come from the encoder (:attr:`NumericField.bins`): by default
    the splits of a small tree fitted on the train labels (``platform/tree_bins.py``), or train quantiles.
    """

    def __init__(self, edges: Sequence[Sequence[float]], dim: int):
        super().__init__()
        n_bins = max(len(e) - 1 for e in edges)
        low = torch.zeros(len(edges), n_bins)
        width = torch.ones(len(edges), n_bins)
        used = torch.zeros(len(edges), n_bins)
        for j, e in enumerate(edges):
            e = torch.tensor(sorted(set(e)), dtype=torch.float32)
            low[j, : len(e) - 1], width[j, : len(e) - 1], used[j, : len(e) - 1] = e[:-1], e.diff(), 1.0
        self.register_buffer("low", low)
        self.register_buffer("width", width)
        self.register_buffer("used", used)  # features with fewer edges pad with unused bins
        # shares clip to [0, 1], but the first bin is open below and each feature's last real bin open above
        floor, ceiling = torch.zeros(len(edges), n_bins), torch.ones(len(edges), n_bins)
        floor[:, 0] = -torch.inf
        ceiling[torch.arange(len(edges)), used.sum(1).long() - 1] = torch.inf
        self.register_buffer("floor", floor)
        self.register_buffer("ceiling", ceiling)
        self.weight = nn.Parameter(torch.empty(len(edges), n_bins, dim).uniform_(-(n_bins**-0.5), n_bins**-0.5))
        self.bias = nn.Parameter(torch.zeros(len(edges), dim))

    def shares(self, x: Tensor) -> Tensor:
        """``[B, N] -> [B, N, T]``: how much of each bin x has passed (padding bins 0)."""
        share = (x.unsqueeze(-1) - self.low) / self.width
        return torch.maximum(torch.minimum(share, self.ceiling), self.floor) * self.used

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(torch.einsum("bnt,ntd->bnd", self.shares(x), self.weight) + self.bias)  # [B, N, d]
        return out.flatten(1)


class FeatureInputs(nn.Module):
    """One embedding table per categorical field (shared by every tier and scenario) and, per side,
    the numerics as one vector each (``periodic`` or ``piecewise``) or one linear projection of them all (``linear``).
    ``forward(batch, side) -> [B, dim(side)]``: the side's field vectors, concatenated.
    """

    def __init__(self, spec: FeatureSpec, embedding_dim: int, numeric: str = ModelConfig.model_fields["numeric_embedding"].default):
        super().__init__()
        self.embeddings = nn.ModuleDict(
            {f.name: nn.Embedding(f.vocab_size, embedding_dim) for f in spec.categorical}
        )
        self.side_fields = {side: [f.name for f in spec.categorical_on(side)] for side in SIDES}
        n_numeric = {side: len(spec.numeric_on(side)) for side in SIDES}
        if numeric == "periodic":
            self.numeric = nn.ModuleDict({s: PeriodicEmbedding(n, embedding_dim) for s, n in n_numeric.items() if n})
            numeric_dims = {s: embedding_dim * n for s, n in n_numeric.items()}
        elif numeric == "piecewise":
            edges = {s: [f.bins or DEFAULT_EDGES for f in spec.numeric_on(s)] for s in SIDES}
            self.numeric = nn.ModuleDict({s: PiecewiseLinearEmbedding(edges[s], embedding_dim) for s, n in n_numeric.items() if n})
            numeric_dims = {s: embedding_dim * n for s, n in n_numeric.items()}
        else:
            self.numeric = nn.ModuleDict({s: nn.Linear(n, embedding_dim) for s, n in n_numeric.items() if n})
            numeric_dims = {s: embedding_dim * bool(n) for s, n in n_numeric.items()}
        self.dims = {side: embedding_dim * len(self.side_fields[side]) + numeric_dims[side] for side in SIDES}

    def forward(self, batch: Mapping[str, Tensor], side: Side) -> Tensor:
        cat = batch[f"cat_{side}"]
        parts = [self.embeddings[name](cat[:, i]) for i, name in enumerate(self.side_fields[side])]
        if side in self.numeric:
            parts.append(self.numeric[side](batch[f"num_{side}"]))
        if not parts:
            return cat.new_zeros((cat.shape[0], 0), dtype=torch.float32)
        return torch.cat(parts, dim=-1)
