"""Evaluation metrics (scikit-learn): AUC and log loss per task, overall, per tier and per scenario,
the paper's table (AUC per task per user tier, model A vs model B, relative lift), a paired
bootstrap of the AUC difference between two models on the same rows, and how often one model's mean over k
seeds is at or above another's over every draw of the seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from tamor.models.feature_spec import FeatureSpec

MIN_POSITIVES = 10


def _cell(y: np.ndarray, p: np.ndarray, min_positives: int) -> dict:
    pos = int(y.sum())
    cell = {"n": len(y), "positives": pos, "auc": np.nan, "logloss": np.nan, "note": ""}
    if len(y) == 0:
        cell["note"] = "no rows"
    elif pos == 0 or pos == len(y):
        cell["note"] = "one class only"
    elif min(pos, len(y) - pos) < min_positives:
        cell["note"] = f"fewer than {min_positives} of a class"
    else:
        cell["auc"] = roc_auc_score(y, p)
        cell["logloss"] = log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])
    return cell


def evaluate_predictions(
    spec: FeatureSpec,
    probs: np.ndarray,
    labels: np.ndarray,
    label_mask: np.ndarray,
    tier: np.ndarray,
    scenario: np.ndarray,
    min_positives: int = MIN_POSITIVES,
) -> pd.DataFrame:
    """One row per (task, slice, group): ``probs``, ``labels``, ``label_mask`` are ``[N, T]``, ``tier``
    and ``scenario`` ``[N]``. Cells with one class or too few of one are kept with NaN and a note.
    """
    rows = []
    slices = [("overall", "all", np.ones(len(tier), dtype=bool))]
    slices += [("tier", name, tier == i) for i, name in enumerate(spec.tiers)]
    slices += [("scenario", name, scenario == i) for i, name in enumerate(spec.scenarios)]
    for t, task in enumerate(spec.task_names):
        known = label_mask[:, t] > 0
        for kind, group, rows_in in slices:
            sel = known & rows_in
            cell = _cell(labels[sel, t], probs[sel, t], min_positives)
            rows.append({"task": task, "slice": kind, "group": group, **cell})
    return pd.DataFrame(rows)


def paper_table(a: pd.DataFrame, b: pd.DataFrame, name_a: str = "tamor", name_b: str = "mmoe") -> pd.DataFrame:
    """AUC per task per user tier for two models with the relative lift of A over B, in percent."""

    def tiers(m: pd.DataFrame) -> pd.DataFrame:
        return m[m["slice"] == "tier"].set_index(["task", "group"])["auc"]

    table = pd.DataFrame({f"auc_{name_a}": tiers(a), f"auc_{name_b}": tiers(b)})
    table["lift_pct"] = 100.0 * (table[f"auc_{name_a}"] / table[f"auc_{name_b}"] - 1.0)
    table.index.names = ["task", "tier"]
    return table.reset_index()


def paired_auc_difference(labels: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                          resamples: int = 1000, level: float = 0.95, seed: int = 0, resample_fits: bool = True) -> dict[str, float]:
    """AUC(A) − AUC(B) on the same rows, each the mean over its fits (seeds), with a paired bootstrap interval.

    ``labels [N]`` (0/1), ``probs_a`` / ``probs_b``: one ``[N]`` array per fit. The rows are resampled with
    replacement, positives and negatives separately (every resample keeps the cell's class counts), and
    both models are scored on the same resample, so the interval says how much of the difference the
    particular test rows decide. With ``resample_fits`` each model's fits are drawn with replacement too, so
    the spread between seeds widens it as well (with a few seeds a rough allowance, not a precise one).
    An interval that holds 0 is a difference these rows and fits cannot tell from none.
    Returns ``{"diff", "low", "high"}``: the observed difference and the ``level`` percentile interval.
    """
    labels = np.asarray(labels)
    if len(np.unique(labels)) != 2:
        raise ValueError("paired_auc_difference needs both classes among the rows")
    rng = np.random.default_rng(seed)

    def aucs(idx: np.ndarray, fits: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([roc_auc_score(labels[idx], p[idx]) for p in fits])

    def mean(values: np.ndarray) -> float:
        return float(values[rng.integers(0, len(values), len(values))].mean() if resample_fits else values.mean())

    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    draws = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        draws.append(mean(aucs(idx, probs_a)) - mean(aucs(idx, probs_b)))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    every = np.arange(len(labels))
    return {"diff": float(aucs(every, probs_a).mean() - aucs(every, probs_b).mean()), "low": float(low), "high": float(high)}


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
