"""Metrics of a split of any size in memory fixed by its cells, not its rows: per task × slice (overall, each tier,
each scenario) the rows of each class counted over fine bins of the predicted logit, with the sums of the predicted
probabilities and of the log loss. Batches are added as they stream by and nothing of a row is kept.

From the bins: AUC by ranks (two rows in one bin, 1/1024 of a logit wide, count as a tie), the mean log loss
exactly, and the expected calibration error over ``CALIBRATION_BINS`` equal-mass groups of whole bins.

Example:
    >>> import numpy as np
    >>> from tamor.models.feature_spec import FeatureSpec, TaskSpec
    >>> spec = FeatureSpec(dataset="x", categorical=[], numeric=[], tiers=["new", "old"], tier_thresholds=[1.0],
    ...                    scenarios=["fund"], tasks=[TaskSpec(name="click", level="item", tiers=["new", "old"])])
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=(4000, 1)); y = (rng.uniform(size=p.shape) < p).astype("float32")
    >>> hist = ScoreHistograms(spec)
    >>> for part in np.array_split(np.arange(4000), 4):  # four batches, as they stream by
    ...     _ = hist.add(p[part], y[part], np.ones_like(y[part]), part % 2, np.zeros(len(part), int))
    >>> table = hist.table()
    >>> table[["slice", "group", "n"]].values.tolist()
    [['overall', 'all', 4000], ['tier', 'new', 2000], ['tier', 'old', 2000], ['scenario', 'fund', 4000]]
    >>> round(float(table["auc"][0]), 2), round(float(table["ece"][0]), 2)
    (0.83, 0.01)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tamor.models.feature_spec import FeatureSpec

LOGIT_LIMIT = 16.0  # logits beyond ±16 (probabilities within 1e-7 of 0 or 1) share the end bins
SCORE_BINS = 32 * 1024  # 1/1024 of a logit per bin: a tie there moves an AUC by far less than its noise
MIN_CLASS_ROWS = 10  # a cell's AUC is computed with at least this many rows of each class
CALIBRATION_BINS = 10  # equal-mass bins of the expected calibration error (rare positives crowd equal-width ones into one)
EPS = 1e-7  # probabilities are clipped to [EPS, 1 − EPS] for the log loss


class ScoreHistograms:
    """Per task × slice: ``counts [T, S, 2, SCORE_BINS]`` (negatives, positives), ``prob_sums [T, S, SCORE_BINS]`` and
    ``loss_sums [T, S]``; slices are overall, then the spec's tiers, then its scenarios."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self.slices = [("overall", "all"), *(("tier", t) for t in spec.tiers), *(("scenario", s) for s in spec.scenarios)]
        shape = (len(spec.task_names), len(self.slices))
        self.counts = np.zeros((*shape, 2, SCORE_BINS))
        self.prob_sums = np.zeros((*shape, SCORE_BINS))
        self.loss_sums = np.zeros(shape)

    def add(self, probs: np.ndarray, labels: np.ndarray, label_mask: np.ndarray, tier: np.ndarray, scenario: np.ndarray) -> ScoreHistograms:
        """Count a batch: ``probs``, ``labels`` and ``label_mask`` ``[B, T]`` (a row counts for task ``t`` where the mask is
        > 0), ``tier`` and ``scenario`` ``[B]`` (indices into the spec's lists). Returns self."""
        probs = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
        logit = np.clip(np.log(probs) - np.log1p(-probs), -LOGIT_LIMIT, LOGIT_LIMIT)
        bins = np.minimum(((logit + LOGIT_LIMIT) * (SCORE_BINS / (2 * LOGIT_LIMIT))).astype(np.int64), SCORE_BINS - 1)
        y = (np.asarray(labels) > 0.5).astype(np.int64)
        loss = -(y * np.log(probs) + (1 - y) * np.log1p(-probs))
        k = len(self.spec.tiers)
        slice_of = [np.zeros(len(tier), dtype=np.int64), 1 + np.asarray(tier, dtype=np.int64), 1 + k + np.asarray(scenario, dtype=np.int64)]
        n_slices = len(self.slices)
        for t in range(probs.shape[1]):
            known = np.asarray(label_mask)[:, t] > 0
            for s in slice_of:  # every row is in three slices: overall, its tier, its scenario
                cell = s[known] * 2 + y[known, t]
                self.counts[t] += np.bincount(cell * SCORE_BINS + bins[known, t], minlength=n_slices * 2 * SCORE_BINS).reshape(n_slices, 2, -1)
                at = s[known] * SCORE_BINS + bins[known, t]
                self.prob_sums[t] += np.bincount(at, weights=probs[known, t], minlength=n_slices * SCORE_BINS).reshape(n_slices, -1)
                self.loss_sums[t] += np.bincount(s[known], weights=loss[known, t], minlength=n_slices)
        return self

    def table(self, min_positives: int = MIN_CLASS_ROWS) -> pd.DataFrame:
        """One row per (task, slice, group) with ``n``, ``positives``, ``auc``, ``logloss``, ``ece`` and a ``note``; a cell
        with one class, or fewer than ``min_positives`` rows of one, keeps NaN metrics and says why."""
        rows = []
        for t, task in enumerate(self.spec.task_names):
            for s, (kind, group) in enumerate(self.slices):
                rows.append({"task": task, "slice": kind, "group": group,
                             **_cell(self.counts[t, s], self.prob_sums[t, s], self.loss_sums[t, s], min_positives)})
        return pd.DataFrame(rows)


def _cell(counts: np.ndarray, prob_sums: np.ndarray, loss_sum: float, min_positives: int) -> dict:
    """The metrics of one cell from its ``counts [2, BINS]``, ``prob_sums [BINS]`` and log-loss sum."""
    neg, pos = counts
    n, positives = int(counts.sum()), int(pos.sum())
    cell = {"n": n, "positives": positives, "auc": np.nan, "logloss": np.nan, "ece": np.nan, "note": ""}
    if n == 0:
        cell["note"] = "no rows"
    elif positives in (0, n):
        cell["note"] = "one class only"
    elif min(positives, n - positives) < min_positives:
        cell["note"] = f"fewer than {min_positives} of a class"
    else:
        below = np.cumsum(neg) - neg  # negatives in lower bins
        cell["auc"] = float((pos * (below + 0.5 * neg)).sum() / (positives * (n - positives)))
        cell["logloss"] = float(loss_sum / n)
        cell["ece"] = _calibration_error(neg + pos, pos, prob_sums, n)
    return cell


def _calibration_error(rows: np.ndarray, positives: np.ndarray, prob_sums: np.ndarray, n: int) -> float:
    """Σ over ``CALIBRATION_BINS`` equal-mass groups of |Σ p − Σ y| / n; each score bin joins the group its middle row
    falls in."""
    cum = np.cumsum(rows)
    group = np.minimum((cum - rows / 2) * CALIBRATION_BINS // n, CALIBRATION_BINS - 1).astype(np.int64)
    predicted = np.bincount(group, weights=prob_sums, minlength=CALIBRATION_BINS)
    observed = np.bincount(group, weights=positives, minlength=CALIBRATION_BINS)
    return float(np.abs(predicted - observed).sum() / n)
