"""Target-aware bin edges for piecewise-linear numerics: the splits of a small regression tree per numeric
feature, fitted on the train labels (Gorishniy et al. 2022, "tree-based bins"). Where quantile edges spend
their bins evenly over the values, these put them where the tasks' rates change.

Fitted by ``tamor preprocess`` after the splits are written (the edges change the model's input layer, not
the encoded columns), on a seeded sample of the train split read with Ray Data.
"""

from __future__ import annotations

import numpy as np
import ray
from sklearn.tree import DecisionTreeRegressor

from tamor.models.feature_spec import FeatureSpec, NumericField

MAX_ROWS = 500_000  # enough rows to place 16 edges; the sample is what comes to the driver
MIN_LEAF = 64  # an edge needs this many train rows on each side


def tree_edges(x: np.ndarray, targets: np.ndarray, bins: int, min_leaf: int = MIN_LEAF) -> list[float]:
    """``x [N]`` (standardised values of one numeric), ``targets [N, T]`` (labels, 0 where unknown) →
    ascending edges: the train minimum, the thresholds of a tree with at most ``bins`` leaves, the maximum.

    Each task's column is scaled to unit variance first, so a rare task's splits count as much as a
    common one's. A feature the tree cannot split gets ``[min, max]``: one bin, a linear response
    (a constant feature: its one value, and :func:`fit_tree_bins` leaves it to the model's default edges).
    """
    scale = targets.std(axis=0)
    y = targets[:, scale > 0] / scale[scale > 0]
    cuts: np.ndarray = np.empty(0)
    if y.shape[1] and len(x) >= 2 * min_leaf and x.min() < x.max():
        tree = DecisionTreeRegressor(max_leaf_nodes=max(bins, 2), min_samples_leaf=min_leaf, random_state=0).fit(x.reshape(-1, 1), y)
        cuts = tree.tree_.threshold[tree.tree_.feature >= 0]
    edges = np.unique(np.round(np.concatenate([cuts, [x.min(), x.max()]]), 6))
    return [float(e) for e in edges]


def fit_tree_bins(train: ray.data.Dataset, rows: int, spec: FeatureSpec, bins: int, seed: int = 0) -> list[NumericField]:
    """The spec's numerics with tree edges fitted on (a seeded sample of at most :data:`MAX_ROWS` of)
    ``train`` (``rows`` of the encoded train split: ``f_<numeric>``, ``label_<task>``, ``mask_<task>``)."""
    if not spec.numeric or bins < 2:
        return list(spec.numeric)
    tasks = [t.name for t in spec.tasks if t.present]
    columns = [f"f_{f.name}" for f in spec.numeric] + [f"{k}_{t}" for t in tasks for k in ("label", "mask")]
    sample = train.select_columns(columns)
    if rows > MAX_ROWS:
        sample = sample.random_sample(MAX_ROWS / rows, seed=seed)
    frame = sample.to_pandas()
    targets = np.stack([frame[f"label_{t}"].to_numpy() * frame[f"mask_{t}"].to_numpy() for t in tasks], axis=1).astype(np.float64)
    out = []
    for f in spec.numeric:
        edges = tree_edges(frame[f"f_{f.name}"].to_numpy(np.float64), targets, bins)
        out.append(f.model_copy(update={"bins": edges}) if len(edges) >= 2 else f)  # a constant: the model's default edges
    return out
