"""Evaluation metrics: AUC, log loss and calibration error per task, overall, per tier and per scenario,
the paper's table (AUC per task per user tier, model A vs model B, relative lift) and a paired
bootstrap of the AUC difference between two models on the same rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd

from tamor.models.feature_spec import FeatureSpec
from tamor.models.score_histograms import CALIBRATION_BINS, MIN_CLASS_ROWS, ScoreHistograms

JUDGED_POSITIVES = 50  # a cell is judged (benchmark, promotion gate) with at least this many test positives
BOOTSTRAP_THREADS = 4  # at most: each thread holds a chunk of draw counts, [rows, chunk] int32


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean |predicted − observed rate| over ``bins`` equal-mass bins of ``p [N]``, weighted by rows; 0 is calibrated.

    Example:
        >>> y = np.array([0, 0, 1, 1]); round(expected_calibration_error(y, np.array([0.1, 0.1, 0.9, 0.9]), bins=2), 3)
        0.1
    """
    order = np.argsort(p, kind="stable")
    parts = np.array_split(order, min(bins, len(p)))
    return float(sum(len(i) * abs(p[i].mean() - y[i].mean()) for i in parts if len(i)) / len(p))


def evaluate_predictions(
    spec: FeatureSpec,
    probs: np.ndarray,
    labels: np.ndarray,
    label_mask: np.ndarray,
    tier: np.ndarray,
    scenario: np.ndarray,
    min_positives: int = MIN_CLASS_ROWS,
) -> pd.DataFrame:
    """One row per (task, slice, group): ``probs``, ``labels``, ``label_mask`` are ``[N, T]``, ``tier``
    and ``scenario`` ``[N]``. Cells with one class or too few of one are kept with NaN and a note
    (:class:`~tamor.models.score_histograms.ScoreHistograms`, which also scores a split batch by batch).
    """
    return ScoreHistograms(spec).add(probs, labels, label_mask, tier, scenario).table(min_positives)


def mean_auc(metrics: pd.DataFrame) -> float:
    """The mean over tasks of the overall AUC (of :func:`evaluate_predictions`' table), skipping cells it left
    undecided; NaN when none has an AUC. What training stops on and the benchmark selects epochs by."""
    overall = metrics[metrics["slice"] == "overall"]["auc"]
    return float(overall.mean()) if overall.notna().any() else float("nan")


def paper_table(a: pd.DataFrame, b: pd.DataFrame, name_a: str = "tamor", name_b: str = "mmoe") -> pd.DataFrame:
    """AUC per task per user tier for two models with the relative lift of A over B, in percent."""

    def tiers(m: pd.DataFrame) -> pd.DataFrame:
        return m[m["slice"] == "tier"].set_index(["task", "group"])["auc"]

    table = pd.DataFrame({f"auc_{name_a}": tiers(a), f"auc_{name_b}": tiers(b)})
    table["lift_pct"] = 100.0 * (table[f"auc_{name_a}"] / table[f"auc_{name_b}"] - 1.0)
    table.index.names = ["task", "tier"]
    return table.reset_index()


def weighted_aucs(labels: np.ndarray, probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of ``probs [N]`` against ``labels [N]`` for each column of ``counts [N, R]`` (how often each row is drawn
    in a resample): ``[R]``, the same as ``roc_auc_score`` on the rows repeated by their counts.

    >>> y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.45, 0.8])
    >>> weighted_aucs(y, p, np.array([[1], [1], [1], [1]]))  # every row once: sklearn's 0.75
    array([0.75])"""
    pos, neg = labels == 1, labels != 1
    return _PairRanks(probs[pos], probs[neg]).aucs(counts[pos], counts[neg])


class _PairRanks:
    """One fit's scores of a cell's positives ``[P]`` and negatives ``[Q]`` in the form that scores any resample by
    ranks: the positives from the highest down, and ``[P + 1, Q]`` placing each negative among them (once at the
    number of positives above it and once at the number at or above it; twice at one place without a tie)."""

    def __init__(self, pos_probs: np.ndarray, neg_probs: np.ndarray):
        from scipy import sparse  # imported here, as scikit-learn below: a Serve replica starts without them

        order = np.argsort(pos_probs, kind="stable")
        self.highest_first = order[::-1].copy()
        p, q = len(pos_probs), len(neg_probs)
        ranked = pos_probs[order]
        above, at_or_above = p - np.searchsorted(ranked, neg_probs, "right"), p - np.searchsorted(ranked, neg_probs, "left")
        self.place = sparse.csr_array((np.ones(2 * q, np.int32), (np.concatenate([above, at_or_above]), np.tile(np.arange(q), 2))),
                                      shape=(p + 1, q))

    def aucs(self, pos_counts: np.ndarray, neg_counts: np.ndarray) -> np.ndarray:
        """``[R]`` AUCs of the resamples ``pos_counts [P, R]``, ``neg_counts [Q, R]`` (int32 counts): each negative
        weighs the drawn positives above it, ties half, in exact integer sums (twice over, halved at the end)."""
        top = np.zeros((len(self.highest_first) + 1, pos_counts.shape[1]), np.int32)  # [P + 1, R]: drawn among the k highest
        np.cumsum(pos_counts[self.highest_first], axis=0, out=top[1:])
        placed = self.place @ neg_counts  # [P + 1, R]; each column sums to twice the negatives drawn
        twice = np.einsum("kr,kr->r", placed, top, dtype=np.int64)
        return twice / (top[-1] * placed.sum(axis=0, dtype=np.int64))


def _resample_counts(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, r]`` int32: how often each of n rows is drawn in each of r resamples of n rows with replacement."""
    drawn = rng.integers(0, n, (r, n)) + np.arange(r)[:, None] * n
    return np.bincount(drawn.ravel(), minlength=r * n).astype(np.int32).reshape(r, n).T.copy()


def bootstrap_mean_aucs(labels: np.ndarray, fits: Mapping[str, Sequence[np.ndarray]], resamples: int = 1000, seed: int = 0,
                        resample_fits: bool = True, chunk: int = 100) -> dict[str, np.ndarray]:
    """Each model's mean AUC over its fits on the same ``resamples`` bootstrap resamples of the rows: ``{model: [R]}``.

    ``labels [N]`` (0/1); ``fits``: per model, one ``[N]`` array of probabilities per fit (seed). Rows are drawn
    with replacement, positives and negatives separately (every resample keeps the class counts), once for every
    model, so differences between models are paired. With ``resample_fits`` each model's fits are drawn with
    replacement too, so the spread between seeds widens an interval as well (with a few seeds a rough allowance).
    Scored by ranks, each fit ranked once (:class:`_PairRanks`), ``chunk`` resamples at a time: one thread draws
    them in order (the draws depend on ``seed`` alone) while the others score the chunks drawn before."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) != 2:
        raise ValueError("a bootstrap of AUCs needs both classes among the rows")
    rng = np.random.default_rng(seed)
    pos, neg = labels == 1, labels != 1
    workers = min(BOOTSTRAP_THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # numpy's and scipy's kernels let go of the GIL
        ranks = {name: list(pool.map(lambda p: _PairRanks(np.asarray(p)[pos], np.asarray(p)[neg]), model_fits))
                 for name, model_fits in fits.items()}
        scored: list[Future] = []
        for start in range(0, resamples, chunk):
            if len(scored) - workers > 0:  # at most one chunk drawn ahead per thread: memory stays a few chunks
                scored[-workers - 1].result()
            r = min(chunk, resamples - start)
            counts = _resample_counts(int(pos.sum()), r, rng), _resample_counts(int(neg.sum()), r, rng)
            picks = {name: rng.integers(0, len(f), (r, len(f))) if resample_fits else None for name, f in fits.items()}
            scored.append(pool.submit(_score_chunk, ranks, *counts, picks))
        parts = [f.result() for f in scored]
    return {name: np.concatenate([part[name] for part in parts]) for name in fits}


def _score_chunk(ranks: dict[str, list[_PairRanks]], pos_counts: np.ndarray, neg_counts: np.ndarray,
                 picks: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """Per model, the mean over its fits (those ``picks [r, fits]`` drew, or all) of each resample's AUC: ``[r]``."""
    out = {}
    for name, model_ranks in ranks.items():
        auc = np.stack([fit.aucs(pos_counts, neg_counts) for fit in model_ranks], axis=1)  # [r, fits]
        out[name] = (auc if picks[name] is None else np.take_along_axis(auc, picks[name], axis=1)).mean(axis=1)
    return out


def difference_interval(observed: float, draws_a: np.ndarray, draws_b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """``{"diff", "low", "high"}``: the ``observed`` AUC(A) − AUC(B) (means over fits) and the ``level`` percentile
    interval of the paired bootstrap draws ``[R]`` of each (:func:`bootstrap_mean_aucs`)."""
    low, high = np.quantile(draws_a - draws_b, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(observed), "low": float(low), "high": float(high)}


def paired_auc_difference(labels: np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray],
                          resamples: int = 1000, level: float = 0.95, seed: int = 0, resample_fits: bool = True) -> dict[str, float]:
    """AUC(A) − AUC(B) on the same rows, each the mean over its fits (seeds), with a paired bootstrap interval
    (:func:`bootstrap_mean_aucs`, :func:`difference_interval`): the interval says how much of the difference the
    particular test rows (and seeds) decide, and one that holds 0 is a difference they cannot tell from none
    (:func:`verdict`). ``labels [N]``; ``probs_a`` / ``probs_b``: one ``[N]`` array per fit."""
    from sklearn.metrics import roc_auc_score

    draws = bootstrap_mean_aucs(labels, {"a": probs_a, "b": probs_b}, resamples, seed, resample_fits)
    observed = np.mean([roc_auc_score(labels, p) for p in probs_a]) - np.mean([roc_auc_score(labels, p) for p in probs_b])
    return difference_interval(observed, draws["a"], draws["b"], level)


def verdict(low: float, high: float) -> int:
    """The one verdict rule, for the benchmark and the promotion gate alike: A is ahead of B (+1) only when the
    interval of A − B (:func:`paired_auc_difference`) lies above zero, behind (−1) only when it lies below, and
    level (0) otherwise."""
    return 1 if low > 0 else -1 if high < 0 else 0
