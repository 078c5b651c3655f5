"""How often one model's mean AUC over k seeds is at or above another's, over every draw of the seeds: a
benchmark's statistic (`bench/peers.py`'s ``draws.csv``), not the product's.

Example:
    >>> per_fit = pd.DataFrame({"model": ["a"] * 2 + ["b"] * 2, "seed": [0, 1] * 2, "task": "click", "group": "all",
    ...                         "auc": [0.71, 0.72, 0.70, 0.73]})
    >>> seed_draws(per_fit, "a", "b", k=1)["share"].tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd


def seed_draws(per_fit: pd.DataFrame, a: str, b: str, k: int, decimals: int | None = None) -> pd.DataFrame:
    """How often model ``a``'s mean AUC over k seeds is at or above ``b``'s, over every draw of the seeds.

    ``per_fit``: one row per model × seed × cell, columns ``model``, ``seed``, ``task``, ``group``, ``auc`` (a
    benchmark's per-fit results, the cells already chosen). For ``a != b`` every k-subset of a's seeds meets
    every k-subset of b's; for ``a == b`` (an A/A check: a model against itself, the spread of a k-seed mean
    alone) every ordered pair of disjoint k-subsets. A comparison judged on one draw of k seeds passes or
    fails with the share of draws it would pass with. Returns one row per cell and a last, ``every cell``:
    ``share`` (of draws with mean_a ≥ mean_b; in every cell at once for the last row), ``low`` / ``high``
    (5th / 95th percentile of mean_a − mean_b) and ``draws``. With ``decimals`` the means are compared as a
    table printed to that many decimals shows them (equal there counts as at or above).
    """
    def subset_means(model: str) -> tuple[np.ndarray, list[tuple[int, ...]], pd.Index]:
        table = per_fit[per_fit["model"] == model].pivot_table(index="seed", columns=["task", "group"], values="auc", sort=False)
        if table.isna().any().any():
            raise ValueError(f"{model} has no AUC for some seed and cell")
        if len(table) < k:
            raise ValueError(f"{model} has {len(table)} seeds, fewer than the {k} of a draw")
        subsets = list(combinations(range(len(table)), k))
        return np.array([table.values[list(s)].mean(0) for s in subsets]), subsets, table.columns  # [draws, cells]

    mean_a, subsets, cells = subset_means(a)
    if a == b:
        pairs = [(i, j) for i, s in enumerate(subsets) for j, t in enumerate(subsets) if not set(s) & set(t)]
        if not pairs:
            raise ValueError(f"an A/A draw of {a} needs at least {2 * k} seeds")
        first, second = mean_a[[i for i, _ in pairs]], mean_a[[j for _, j in pairs]]  # [draws, cells] each
    else:
        mean_b, _, cells_b = subset_means(b)
        if list(cells_b) != list(cells):
            raise ValueError(f"{a} and {b} are scored on different cells")
        first = np.repeat(mean_a, len(mean_b), axis=0)
        second = np.tile(mean_b, (len(mean_a), 1))
    diff = first - second
    ahead = diff >= 0 if decimals is None else first.round(decimals) >= second.round(decimals)  # [draws, cells]
    rows = [{"task": task, "group": group, "share": float(ahead[:, c].mean()),
             "low": float(np.quantile(diff[:, c], 0.05)), "high": float(np.quantile(diff[:, c], 0.95)), "draws": len(diff)}
            for c, (task, group) in enumerate(cells)]
    rows.append({"task": "every cell", "group": "", "share": float(ahead.all(1).mean()), "low": np.nan, "high": np.nan,
                 "draws": len(diff)})
    return pd.DataFrame(rows)
