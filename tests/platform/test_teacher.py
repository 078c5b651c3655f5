"""The tree teacher: out-of-fold probabilities that follow the labels' signal but never a row's own label."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from helpers import make_spec, planted_columns
from tamor.platform.teacher import FOLDS, add_teacher, features_of, fit_teachers, fold_of, has_teacher

N = 3000


@pytest.fixture(scope="module")
def spec():
    return make_spec()


def _frame(spec, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(planted_columns(spec, N, seed=seed))


def _with_teacher(ray, frame: pd.DataFrame, spec) -> pd.DataFrame:
    """Fit the teachers and add their columns the way `tamor preprocess` does: Ray Data batches of Arrow tables."""
    ds = ray.data.from_pandas(frame)
    teachers = fit_teachers(ds, len(frame), spec)
    return ds.map_batches(add_teacher, fn_kwargs={"spec": spec, "teachers": teachers}, batch_format="pyarrow").to_pandas()


def test_identical_rows_share_a_fold_and_every_fold_is_used(spec):
    x = features_of(_frame(spec), spec)
    assert set(fold_of(x)) == set(range(FOLDS))
    assert set(fold_of(x, 5)) == set(range(5))
    twice = np.concatenate([x[:50], x[:50]])
    assert (fold_of(twice)[:50] == fold_of(twice)[50:]).all()


def test_the_teacher_follows_the_planted_signal(ray_session, spec):
    out = _with_teacher(ray_session, _frame(spec), spec)
    for task in spec.task_names:
        p = out[f"teacher_{task}"].to_numpy()
        assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
        assert roc_auc_score(out[f"label_{task}"], p) > 0.65, task


def test_no_row_gets_a_teacher_fitted_on_its_own_label(ray_session, spec):
    frame = _frame(spec)
    frame["label_click"] = np.random.default_rng(1).integers(0, 2, N).astype(np.float32)  # labels nothing can predict
    out = _with_teacher(ray_session, frame, spec)
    out_of_fold = roc_auc_score(out["label_click"], out["teacher_click"])
    x, noise = features_of(frame, spec), frame["label_click"]
    in_sample = roc_auc_score(noise, HistGradientBoostingClassifier(random_state=0).fit(x, noise).predict_proba(x)[:, 1])
    assert abs(out_of_fold - 0.5) < 0.05 < in_sample - 0.6  # an in-sample teacher would have learnt the noise


def test_a_task_with_one_class_gets_its_rate_and_has_teacher_reads_the_split(ray_session, spec, tmp_path):
    frame = _frame(spec)
    frame["label_large_invest"] = 0.0
    out = _with_teacher(ray_session, frame, spec)
    assert (out["teacher_large_invest"] == 0).all()
    for name, table in (("labels", frame), ("teacher", out)):
        (tmp_path / name).mkdir()
        table.to_parquet(tmp_path / name / "part.parquet")
    assert not has_teacher(tmp_path / "labels", spec) and has_teacher(tmp_path / "teacher", spec)
