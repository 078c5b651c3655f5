"""The tree teacher: out-of-fold probabilities that follow the labels' signal but never a row's own label."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from helpers import make_spec, planted_columns
from tamor.platform.teacher import FOLDS, add_teacher, fit_teachers, fold_of, has_teacher

N = 3000


@pytest.fixture(scope="module")
def spec():
    return make_spec()


def _frame(spec, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(planted_columns(spec, N, seed=seed))


def test_identical_rows_share_a_fold_and_every_fold_is_used(spec):
    frame = _frame(spec)
    folds = fold_of(frame, spec)
    assert set(folds) == set(range(FOLDS))
    twice = pd.concat([frame.head(50), frame.head(50)], ignore_index=True)
    assert (fold_of(twice, spec)[:50] == fold_of(twice, spec)[50:]).all()


def test_the_teacher_follows_the_planted_signal(ray_session, spec):
    frame = _frame(spec)
    teachers = fit_teachers(ray_session.data.from_pandas(frame), N, spec)
    out = add_teacher(frame.copy(), spec, teachers)
    for task in spec.task_names:
        p = out[f"teacher_{task}"].to_numpy()
        assert p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
        assert roc_auc_score(frame[f"label_{task}"], p) > 0.65, task


def test_no_row_gets_a_teacher_fitted_on_its_own_label(ray_session, spec):
    frame = _frame(spec)
    noise = np.random.default_rng(1).integers(0, 2, N).astype(np.float32)  # labels nothing can predict
    frame["label_click"] = noise
    teachers = fit_teachers(ray_session.data.from_pandas(frame), N, spec)
    out_of_fold = roc_auc_score(noise, add_teacher(frame.copy(), spec, teachers)["teacher_click"])
    features = frame[[c for c in frame.columns if c.startswith("f_")]].to_numpy(np.float64)
    in_sample = roc_auc_score(noise, HistGradientBoostingClassifier(random_state=0).fit(features, noise).predict_proba(features)[:, 1])
    assert abs(out_of_fold - 0.5) < 0.05 < in_sample - 0.6  # an in-sample teacher would have learnt the noise


def test_a_task_with_one_class_gets_its_rate_and_has_teacher_reads_the_split(ray_session, spec, tmp_path):
    frame = _frame(spec)
    frame["label_large_invest"] = 0.0
    teachers = fit_teachers(ray_session.data.from_pandas(frame), N, spec)
    out = add_teacher(frame.copy(), spec, teachers)
    assert (out["teacher_large_invest"] == 0).all()
    for name, table in (("labels", frame), ("teacher", out)):
        (tmp_path / name).mkdir()
        table.to_parquet(tmp_path / name / "part.parquet")
    assert not has_teacher(tmp_path / "labels", spec) and has_teacher(tmp_path / "teacher", spec)
