"""Row checks, one batch at a time, without Ray: what each odd value becomes."""

import numpy as np
import pandas as pd
import pytest

from tamor.platform.schema import load_schema
from tamor.platform.validate import REASON, check_batch, parse_label

NOW = 1_767_225_600.0  # 2026-01-01


def rows(**changes) -> pd.DataFrame:
    """Two good synthetic log rows, with ``changes`` applied to the second."""
    base = {"ts": NOW - 3600, "user_id": "u1", "item_id": "i1", "holdings": 10.0, "scenario": "fund",
            "age_band": "30s", "region": "east", "device": "ios", "risk_pref": "R2", "activity": 3, "tenure_days": 100,
            "risk_level": "R2", "brand": "b1", "promo": 0, "min_amount": 100.0, "hour": 9, "page": "home", "position": 1,
            "click": 1, "conversion": 1, "invest": 0, "large_invest": 0, "high_holding": 0}
    frame = pd.DataFrame([base, base]).astype(object)
    for column, value in changes.items():
        frame.at[1, column] = value
    return frame


def reasons(**changes) -> list[str]:
    schema = load_schema("synthetic")
    frame = rows(**changes)
    missing = [c for c in schema.raw_columns() if c not in frame]
    assert not missing, f"the test's rows lack {missing}"
    return check_batch(frame, schema, now=NOW)[REASON].tolist()


def test_timestamps_that_are_infinite_or_beyond_the_horizon_are_quarantined():
    assert reasons(ts=np.inf) == ["", "non_finite_timestamp"]
    assert reasons(ts=NOW + 2 * 86_400) == ["", "future_timestamp"]
    assert reasons(ts=NOW + 3600) == ["", ""]  # within the default one-day horizon


@pytest.mark.parametrize("ts", [-86_400, -1e300, 0, 946_684_799])
def test_timestamps_before_the_floor_are_quarantined_not_wrapped(ts):
    assert reasons(ts=ts) == ["", "timestamp_before_floor"]  # the default floor: 2000-01-01


def test_a_step_whose_precondition_is_missing_breaks_the_chain():
    assert reasons(click=None) == ["", "chain_violation:conversion_without_click"]


def test_boolean_labels_are_zero_and_one_and_bytes_ids_are_decoded():
    frame = rows(user_id=b"u223")
    frame["click"] = [True, False]
    frame["conversion"] = [np.bool_(True), False]
    checked = check_batch(frame, load_schema("synthetic"), now=NOW)
    assert checked[REASON].tolist() == ["", ""]
    assert checked["user_id"].tolist() == ["u1", "u223"]
    task = load_schema("synthetic").tasks[0]
    assert parse_label(checked[task.column], task).tolist() == [1.0, 0.0]
    assert parse_label(pd.Series(["true", "FALSE", "yes"]), task).tolist() == [1.0, 0.0, -1.0]
