"""Real logs come in by schema, without editing the file: a bank-campaign-shaped CSV and a marketing
e-mail log with spend, each small and written by the test."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest
import yaml

from tamor.platform.data_dir import SPLITS, DataDir
from tamor.platform.preprocess import PreprocessError, preprocess
from tamor.platform.schema import SchemaError, load_schema


def write_schema(tmp_path, body: dict):
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_schema(path)


def bank_log(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A bank's campaign log: no customer id, no timestamp, a signed balance, a yes/no outcome, spend."""
    rng = np.random.default_rng(seed)
    balance = np.round(rng.normal(800, 1500, n), 2)  # ~30% negative
    return pd.DataFrame({
        "age": rng.integers(18, 90, n), "job": rng.choice(["admin.", "technician", "retired", "student"], n),
        "balance": balance, "channel": rng.choice(["cellular", "telephone"], n),
        "newbie": rng.choice(["1", "0"], n), "month": rng.choice(["may", "jun", "jul"], n),
        "subscribed": rng.choice(["yes", "no"], n, p=[0.2, 0.8]), "spend": np.round(rng.exponential(80, n), 2),
    })


BANK_SCHEMA = {
    "name": "bank",
    "source": {"format": "csv"},
    "features": [{"column": "age", "side": "user", "type": "numeric"}, {"column": "job", "side": "user", "type": "categorical"},
                 {"column": "month", "side": "context", "type": "categorical"}],
    "tiers": {"column": "balance", "names": ["new", "low", "high"], "thresholds": [0.01, 1000], "signed": True},
    "scenario": {"column": "channel"},
    "tasks": [{"name": "subscribed", "column": "subscribed", "positive": ["yes"]},
              {"name": "big_spend", "column": "spend", "positive": "> 100"}],
    "preprocess": {"teacher": False},  # a fit per run; tests/platform/test_teacher.py and the census fixture cover it
}


def splits(data: DataDir) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(data.split(s)).assign(split=s) for s in SPLITS], ignore_index=True)


def test_a_zipped_bank_log_without_ids_or_timestamps_comes_in_as_declared(ray_session, tmp_path):
    raw = bank_log()
    raw.to_csv(tmp_path / "bank.csv", index=False)
    with zipfile.ZipFile(tmp_path / "bank.zip", "w") as z:
        z.write(tmp_path / "bank.csv", "bank-full.csv")
    schema = write_schema(tmp_path, BANK_SCHEMA)
    assert schema.split.by == "hash"  # no timestamp: a reproducible hash split
    report = preprocess(str(tmp_path / "bank.zip"), schema, tmp_path / "data")
    assert report.rows_quarantined == 0 and report.conserved  # negative balances are valid here
    rows = splits(DataDir(tmp_path / "data"))
    assert len(rows) == len(raw) and rows["user_id"].is_unique  # each row its own user, never merged
    assert rows["label_big_spend"].sum() == (raw["spend"] > 100).sum()  # the comparison label
    assert rows["label_subscribed"].sum() == (raw["subscribed"] == "yes").sum()
    assert (rows.loc[rows["holdings"] < 0, "tier"] == 0).all() and set(rows["tier"]) == {0, 1, 2}  # negative: lowest tier
    counts = rows["split"].value_counts(normalize=True)
    assert counts["train"] == pytest.approx(0.8, abs=0.04) and counts["test"] == pytest.approx(0.1, abs=0.03)
    spec = DataDir(tmp_path / "data").spec()
    assert {"balance", "channel"} <= {f.name for f in spec.numeric + spec.categorical}  # baselines see them too


def test_a_tier_from_a_flag_and_a_time_split_on_row_counts(ray_session, tmp_path):
    raw = bank_log(seed=1)
    rng = np.random.default_rng(2)
    days = rng.choice(np.arange(1_700_000_000, 1_700_100_000), len(raw) - 1, replace=False)  # unique: the join key below
    raw["ts"] = np.sort(np.concatenate([days, [4_100_000_000]]))  # and one in the year 2100
    raw.to_csv(tmp_path / "bank.csv.gz", index=False, compression="gzip")
    schema = write_schema(tmp_path, {**BANK_SCHEMA, "timestamp": "ts",
                                     "tiers": {"column": "newbie", "names": ["new", "established"], "values": {"1": "new", "0": "established"}}})
    assert schema.split.by == "time"
    preprocess(str(tmp_path / "bank.csv.gz"), schema, tmp_path / "data")
    rows = splits(DataDir(tmp_path / "data"))
    expected = np.where(raw.set_index("ts").loc[rows["ts"], "newbie"].astype(str) == "1", 0, 1)
    np.testing.assert_array_equal(rows["tier"].to_numpy(), expected)
    counts = rows["split"].value_counts(normalize=True)  # fractions of rows, whatever the far-off timestamp
    assert counts["valid"] == pytest.approx(0.1, abs=0.02) and counts["test"] == pytest.approx(0.1, abs=0.02)
    assert rows.groupby("split")["ts"].max()["train"] < rows.groupby("split")["ts"].min()["valid"]


def test_an_amount_used_as_a_label_is_a_clear_error(ray_session, tmp_path):
    bank_log().to_csv(tmp_path / "bank.csv", index=False)
    body = {**BANK_SCHEMA, "tasks": [{"name": "big_spend", "column": "spend"}], "preprocess": {"max_reject_fraction": 1.0}}
    with pytest.raises(PreprocessError, match="positive: '> 100'"):
        preprocess(str(tmp_path / "bank.csv"), write_schema(tmp_path, body), tmp_path / "data")


def test_a_declared_column_missing_from_the_csv_names_file_and_column(tmp_path):
    bank_log().drop(columns=["job"]).to_csv(tmp_path / "bank.csv", index=False)
    with pytest.raises(SchemaError, match=r"bank\.csv: no column 'job'"):
        preprocess(str(tmp_path / "bank.csv"), write_schema(tmp_path, BANK_SCHEMA), tmp_path / "data")


@pytest.mark.parametrize("task, message", [
    ({"name": "t", "column": "spend", "positive": [">100"]}, "looks like a comparison"),
    ({"name": "t", "column": "spend", "positive": "big"}, "not a comparison"),
    ({"name": "t", "column": "age"}, "cannot also be features"),
])
def test_unsupported_label_forms_are_schema_errors(tmp_path, task, message):
    with pytest.raises(SchemaError, match=message):
        write_schema(tmp_path, {**BANK_SCHEMA, "tasks": [task]})
