"""An out-of-fold tree teacher: ``teacher_<task>`` columns in the train split, for distillation.

A default scikit-learn ``HistGradientBoostingClassifier`` per task is fitted on (a seeded sample of at
most :data:`MAX_ROWS` of) the encoded train split, ``FOLDS`` times: each row's fold is a hash of its
encoded features, and the row gets the probability of the teacher fitted without its fold, so no row's
target saw its own label. Training mixes it into the label (``TrainConfig.distill``): on census and the
synthetic world a deep model learns more from the tree's soft targets plus the labels than from the labels
alone. Only training reads these columns; serving computes nothing new.

Written by ``tamor preprocess`` after the splits (the train split is rewritten beside and swapped in).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from sklearn.ensemble import HistGradientBoostingClassifier

from tamor.models.feature_spec import FeatureSpec

MAX_ROWS = 500_000  # rows the teachers are fitted on (a seeded sample beyond that); they come to the driver
FOLDS = 3
MAX_CATEGORIES = 255  # HistGradientBoosting's category limit; larger vocabularies are used as numbers


def has_teacher(train_dir: str | Path, spec: FeatureSpec) -> bool:
    """Whether the train split (a Parquet directory) carries every task's ``teacher_<task>`` column."""
    files = sorted(Path(train_dir).glob("**/*.parquet"))
    names = set(pq.read_schema(files[0]).names) if files else set()
    return all(f"teacher_{t}" in names for t in spec.task_names)


def feature_columns(spec: FeatureSpec) -> list[str]:
    """The encoded feature columns a tree reads: the categorical ids, then the standardised numerics."""
    return [f"f_{f.name}" for f in spec.categorical + spec.numeric]


def features_of(frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """``[N, F]`` float64: the encoded categorical ids, then the standardised numerics."""
    return frame[feature_columns(spec)].to_numpy(np.float64)


def new_tree(spec: FeatureSpec, seed: int) -> HistGradientBoostingClassifier:
    """A default ``HistGradientBoostingClassifier`` for :func:`features_of`'s matrix: categoricals with at
    most :data:`MAX_CATEGORIES` values as categories, the rest as numbers. The teacher and the peer
    benchmark's tree are this model."""
    categorical = np.array([f.vocab_size <= MAX_CATEGORIES for f in spec.categorical] + [False] * len(spec.numeric), dtype=bool)
    return HistGradientBoostingClassifier(categorical_features=categorical if categorical.any() else None, random_state=seed)


def fold_of(x: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """``[N]`` fold ids in ``[0, folds)`` from a hash of each row of ``x [N, F]`` (as float64, so the same row
    hashes alike however its batch was typed): identical rows share a fold."""
    return (pd.util.hash_pandas_object(pd.DataFrame(x), index=False).to_numpy() % folds).astype(np.int64)


def fit_teachers(train: ray.data.Dataset, rows: int, spec: FeatureSpec, seed: int = 0, folds: int = FOLDS) -> dict[str, list]:
    """``{task: [folds teachers]}``, teacher k fitted on the rows outside fold k where the task counts
    (its label known and the task an objective of the row's tier). A task with one class in a fold's
    rows gets that class's rate (a constant)."""
    sample = train.select_columns([*feature_columns(spec), "tier", *[f"{k}_{t}" for t in spec.task_names for k in ("label", "mask")]])
    if rows > MAX_ROWS:
        sample = sample.random_sample(MAX_ROWS / rows, seed=seed)
    frame = sample.to_pandas()
    x = features_of(frame, spec)
    fold = fold_of(x, folds)
    task_tier = np.asarray(spec.task_tier_mask())  # [T, G]
    teachers: dict[str, list] = {}
    for i, task in enumerate(spec.task_names):
        counts = (frame[f"mask_{task}"].to_numpy() > 0) & (task_tier[i, frame["tier"].to_numpy()] > 0)
        y = frame[f"label_{task}"].to_numpy()
        teachers[task] = []
        for k in range(folds):
            keep = counts & (fold != k)
            if len(np.unique(y[keep])) < 2:  # nothing to split on: the rate
                teachers[task].append(float(y[keep].mean()) if keep.any() else 0.0)
                continue
            teachers[task].append(new_tree(spec, seed).fit(x[keep], y[keep]))
    return teachers


def teacher_probabilities(frame: pd.DataFrame, spec: FeatureSpec, teachers: dict[str, list]) -> dict[str, np.ndarray]:
    """``{teacher_<task>: [N] float32}``: each row's probability from the teacher not fitted on its fold."""
    x = features_of(frame, spec)
    folds = {n: fold_of(x, n) for n in {len(models) for models in teachers.values()}}  # hashed once, not per task
    out = {}
    for task, models in teachers.items():
        fold = folds[len(models)]  # as many folds as the teachers were fitted on
        p = np.zeros(len(frame), dtype=np.float32)
        for k, model in enumerate(models):
            rows = fold == k
            if rows.any():
                p[rows] = model if isinstance(model, float) else model.predict_proba(x[rows])[:, 1]
        out[f"teacher_{task}"] = p
    return out


def add_teacher(batch: pa.Table, spec: FeatureSpec, teachers: dict[str, list]) -> pa.Table:
    """The batch (an Arrow table, so the split keeps its column types) with ``teacher_<task>`` columns appended."""
    for name, p in teacher_probabilities(batch.select(feature_columns(spec)).to_pandas(), spec, teachers).items():
        batch = batch.append_column(name, pa.array(p))
    return batch
