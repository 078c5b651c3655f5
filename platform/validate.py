"""Row checks of the tiered-log contract, one pandas batch at a time.

:func:`check_batch` never drops a row: it keeps every raw value as text and adds ``_reason`` (empty
for a good row, else the first rule it broke) and ``_key`` (a stable hash of the whole raw row, for
hash splits and the ids of rows without an id column). Rows with a reason go to ``quarantine/``; the rest are encoded.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from tamor.models.encoder import as_text, parse_number
from tamor.platform.schema import LogSchema, SchemaError, Task, comparison

REASON = "_reason"
_BOOLEAN = {"true": "1", "false": "0"}
KEY = "_key"
FILE = "_file"  # the source file a row was read from (Ray Data's ``include_paths`` column, renamed)
PATH = "path"


def parse_label(text: pd.Series, task: Task) -> pd.Series:
    """Text → 0.0 / 1.0, NaN where missing, and -1.0 where present but not a binary label."""
    if isinstance(task.positive, str):  # a comparison such as "> 100"
        op, threshold = comparison(task.positive)
        num = parse_number(text)
        out = op(num, threshold).astype("float64").where(num.notna(), np.nan)
        return out.where(~(text.notna() & num.isna()), -1.0)  # present but not a number: not a label
    if task.positive is not None:
        positive = set(task.positive)
        return text.map(lambda v: np.nan if v is None else float(v in positive)).astype("float64")
    num = parse_number(text)
    words = text.notna() & num.isna()  # booleans (Parquet bool columns, "true"/"False" in text) are labels too
    if words.any():
        num[words] = parse_number(text[words].map(lambda v: _BOOLEAN.get(v.lower(), v)))
    bad = text.notna() & ~num.isin([0.0, 1.0])
    return num.where(~bad, -1.0)


def check_timestamps(text: pd.Series, schema: LogSchema, now: float, flag) -> None:
    """Flag missing, unparsable, non-finite, too early and future timestamps (``flag(bad_rows, reason)``)."""
    ts = parse_number(text)
    flag(text.isna(), "missing_timestamp")
    flag(ts.isna(), "unparsable_timestamp")
    flag(~np.isfinite(ts), "non_finite_timestamp")
    floor = schema.preprocess.earliest_timestamp
    if floor is not None:  # a negative or tiny epoch is a broken clock, and −1e300 overflows int64 in the splits
        flag(ts < floor, "timestamp_before_floor")
    horizon = schema.preprocess.future_horizon_days
    if horizon is not None:  # one row dated 2100 would otherwise own the validation and test splits
        flag(ts > now + horizon * 86_400, "future_timestamp")


def check_batch(batch: pd.DataFrame, schema: LogSchema, now: float | None = None) -> pd.DataFrame:
    """Validate raw rows: ``[N rows] -> [N rows]`` with every raw column as text plus ``_reason``, ``_key``."""
    strip = schema.source.csv.strip
    source_file = batch[PATH] if PATH in batch.columns and PATH not in schema.raw_columns() else None
    if source_file is not None:  # not part of the row: the whole-row hash must not depend on where it was read
        batch = batch.drop(columns=[PATH])
    cols = schema.raw_columns()
    missing_cols = [c for c in cols if c not in batch.columns]
    if missing_cols:
        raise SchemaError(f"schema {schema.name!r} names columns the data lacks: {missing_cols} (it has {list(batch.columns)})")
    df = pd.DataFrame({c: as_text(batch[c], strip) for c in cols})
    reason = pd.Series("", index=df.index, dtype=object)

    def flag(bad: pd.Series, why: str) -> None:
        # The first broken rule is the reason; later rules do not overwrite it.
        reason[(reason == "") & bad.fillna(False).astype(bool)] = why

    for role, col in (("user_id", schema.ids.user), ("item_id", schema.ids.item)):
        if col is not None:
            flag(df[col].isna(), f"missing_{role}")
    if schema.timestamp is not None:
        check_timestamps(df[schema.timestamp], schema, time.time() if now is None else now, flag)
    tiers = schema.tiers
    flag(df[tiers.column].isna(), "missing_amount")
    if tiers.values is not None:
        flag(~df[tiers.column].isin(list(tiers.values)), "unknown_tier_value")
    else:
        amount = parse_number(df[tiers.column])
        flag(amount.isna(), "unparsable_amount")
        flag(~np.isfinite(amount), "non_finite_amount")
        if not tiers.signed:
            flag(amount < 0, "negative_amount")
    limit = schema.preprocess.max_abs_numeric
    for f in schema.model_features:
        if f.type == "numeric":  # missing is fine (it becomes the mean); inf or huge would poison the statistics
            x = parse_number(df[f.column])
            flag(np.isinf(x) | (x.abs() > limit), f"numeric_out_of_range:{f.column}")
    scen = df[schema.scenario.column]
    flag(scen.isna(), "missing_scenario")
    if schema.scenario.values is not None:
        flag(~scen.isin(schema.scenario.values), "unknown_scenario")
    labels = {t.name: parse_label(df[t.column], t) for t in schema.present_tasks}
    for name, lab in labels.items():
        flag(lab == -1.0, f"label_not_binary:{name}")
    for t in schema.present_tasks:
        if t.after is not None and t.after in labels:
            # a step taken without its precondition, or with the precondition missing, breaks the chain
            flag((labels[t.name] == 1.0) & (labels[t.after] != 1.0), f"chain_violation:{t.name}_without_{t.after}")
    df[REASON] = reason.astype(str)
    # A stable hash of the whole raw row (every column, read or not): hash splits and row ids.
    whole = pd.DataFrame({c: df[c] if c in cols else as_text(batch[c], strip) for c in sorted(batch.columns, key=str)})
    df[KEY] = pd.util.hash_pandas_object(whole, index=False).to_numpy(dtype=np.uint64)
    if source_file is not None:
        df[FILE] = source_file.astype(str).to_numpy()
    return df
