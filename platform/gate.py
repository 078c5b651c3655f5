"""The promotion gate: a new model replaces the one in production only if no user tier is worse off beyond noise.

Both models score the same test rows (:func:`tamor.platform.evaluate.paired_test_predictions`). The gate judges
each cell — task × (overall, each tier) with at least ``min_positives`` test positives — by the one verdict rule
the benchmark uses (:func:`tamor.models.metrics.verdict`): the new model is behind in a cell only when the paired
bootstrap 95% interval of AUC(new) − AUC(current) over those rows lies below zero. Cells with fewer positives are
shown, never judged.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, (2000, 1)).astype(float)
    >>> good = y + rng.normal(0, 0.8, y.shape)
    >>> paired = Paired(["click"], ["new", "high"], y, np.ones_like(y), rng.integers(0, 2, 2000), good, good)
    >>> compare(paired, GateConfig()).promote
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tamor.models.metrics import JUDGED_POSITIVES, MIN_CLASS_ROWS, paired_auc_difference, verdict


class GateConfig(BaseModel):
    """When a new model may replace the current one (``alias``, default ``production``)."""

    model_config = ConfigDict(extra="forbid")
    alias: str = "production"
    min_positives: int = Field(JUDGED_POSITIVES, ge=1, description="test positives a cell needs to be judged")
    resamples: int = Field(1000, ge=100, description="paired bootstrap resamples of the test rows per judged cell")


@dataclass(frozen=True)
class Paired:
    """Both models on the same test rows: ``labels``, ``label_mask``, ``probs_new``, ``probs_current`` ``[N, T]``
    (``probs_current`` None when nothing is in production yet), ``tier`` ``[N]`` (indices into ``tiers``)."""

    tasks: list[str]
    tiers: list[str]
    labels: np.ndarray
    label_mask: np.ndarray
    tier: np.ndarray
    probs_new: np.ndarray
    probs_current: np.ndarray | None


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    table: pd.DataFrame  # task, slice, group, positives, auc_new, auc_current, delta, low, high, judged, worse

    def as_dict(self) -> dict:
        worse = self.table[self.table["worse"]]
        return {"promote": self.promote, "reason": self.reason, "cells_judged": int(self.table["judged"].sum()),
                "cells_worse": [f"{r.task}/{r.group}: {r.auc_current:.4f} → {r.auc_new:.4f} (95% interval of the difference "
                                f"{r.low:+.4f} … {r.high:+.4f})" for r in worse.itertuples()]}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score  # where a gate is judged, not where the CLI imports this module

    return float(roc_auc_score(y, p)) if min(y.sum(), len(y) - y.sum()) >= MIN_CLASS_ROWS else float("nan")


def _cell(paired: Paired, t: int, rows: np.ndarray, cfg: GateConfig) -> dict:
    """One task × slice: both AUCs on its rows and, when judged, the paired interval and the verdict."""
    y, new = paired.labels[rows, t], paired.probs_new[rows, t]
    cell = {"positives": int(y.sum()), "auc_new": _auc(y, new), "auc_current": np.nan, "delta": np.nan, "low": np.nan,
            "high": np.nan, "judged": False, "worse": False}
    if paired.probs_current is None:
        return cell
    current = paired.probs_current[rows, t]
    cell["auc_current"] = _auc(y, current)
    cell["delta"] = cell["auc_new"] - cell["auc_current"]
    if cell["positives"] >= cfg.min_positives and np.isfinite(cell["delta"]):
        interval = paired_auc_difference(y, [new], [current], resamples=cfg.resamples, resample_fits=False)
        cell.update(low=interval["low"], high=interval["high"], judged=True, worse=verdict(interval["low"], interval["high"]) < 0)
    return cell


def compare(paired: Paired, cfg: GateConfig) -> GateDecision:
    """Judge every task × (overall, tier) cell of ``paired``; promote when no judged cell is behind beyond noise."""
    slices = [("overall", "all", np.ones(len(paired.tier), dtype=bool))]
    slices += [("tier", name, paired.tier == i) for i, name in enumerate(paired.tiers)]
    table = pd.DataFrame([
        {"task": task, "slice": kind, "group": group, **_cell(paired, t, (paired.label_mask[:, t] > 0) & rows, cfg)}
        for t, task in enumerate(paired.tasks) for kind, group, rows in slices
    ])
    if paired.probs_current is None:
        return GateDecision(True, f"nothing in {cfg.alias!r} yet: the first model is promoted", table)
    n_worse, n_judged = int(table["worse"].sum()), int(table["judged"].sum())
    if n_judged == 0:
        return GateDecision(False, f"no cell has {cfg.min_positives}+ test positives: nothing to judge the new model by", table)
    if n_worse:
        worst = table[table["worse"]].sort_values("delta").iloc[0]
        return GateDecision(False, f"refused: {n_worse} of {n_judged} judged cells behind beyond their 95% interval "
                                   f"(worst {worst.task}/{worst.group} {worst.delta:+.4f})", table)
    return GateDecision(True, f"promoted: no judged cell ({n_judged}) behind beyond its 95% interval", table)
