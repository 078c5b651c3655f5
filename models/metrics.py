"""Evaluation metrics (scikit-learn): AUC and log loss per task, overall, per tier and per scenario,
and the paper's table (AUC per task per user tier, model A vs model B, relative lift).
"""

from __future__ import annotations

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
