"""The paper's Fig. 3: tier-aware vs tier-agnostic user representations, projected to 2-D
(PCA and t-SNE) and coloured by user tier, side by side, with each panel's silhouette by tier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from tamor.models.base import MultiTaskModel
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.platform.plots import save, subplots

COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]


def representation_sample(model: MultiTaskModel, split_dir: str | Path, n: int = 1500, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Representations ``{name: [n, d]}`` of one row per user (up to ``n`` users) and their tiers ``[n]``."""
    frame = pd.read_parquet(split_dir)
    frame = frame.drop_duplicates("user_id").sample(min(n, frame["user_id"].nunique()), random_state=seed)
    cols = {c: frame[c].to_numpy() for c in batch_columns(model.spec, with_labels=False)}
    with torch.no_grad():
        reps = model.eval().representations(batch_from_columns(model.spec, cols))
    return {k: v.float().numpy() for k, v in reps.items()}, frame["tier"].to_numpy()


def fig3(reps: dict[str, np.ndarray], tier: np.ndarray, tiers: list[str], path: str | Path, seed: int = 0) -> dict[str, float]:
    """Draw PCA (top) and t-SNE (bottom) of each representation; return the silhouette by tier of each."""
    names = [k for k in ("tier_aware", "tier_agnostic") if k in reps] or list(reps)
    fig, axes = subplots(2, len(names), figsize=(5.2 * len(names), 9.0), squeeze=False)
    silhouettes = {}
    for j, name in enumerate(names):
        x = reps[name]
        silhouettes[name] = float(silhouette_score(x, tier)) if len(set(tier)) > 1 else float("nan")
        projections = {
            "PCA": PCA(n_components=2, random_state=seed).fit_transform(x),
            "t-SNE": TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, len(x) // 4)).fit_transform(x),
        }
        for i, (method, xy) in enumerate(projections.items()):
            ax = axes[i, j]
            for t, label in enumerate(tiers):
                sel = tier == t
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, alpha=0.6, color=COLOURS[t % len(COLOURS)], label=label)
            ax.set_title(f"{name.replace('_', '-')} ({method}); silhouette {silhouettes[name]:.3f}")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].legend(title="user tier", markerscale=3)
    save(fig, path, dpi=110)
    return silhouettes
