"""Preprocessing with Ray Data: row conservation, quarantine reasons, no leakage, time split."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import CENSUS_SAMPLE, no_teacher, session_actors
from tamor.models.encoder import Encoder
from tamor.models.errors import TamorError
from tamor.models.feature_spec import FeatureSpec
from tamor.platform.data_dir import DataDir
from tamor.platform.preprocess import GATHER_ROWS, PreprocessError, _latest, combine_by_key, map_in_slices, preprocess
from tamor.platform.schema import Source, load_schema
from tamor.platform.world import WorldConfig, impressions, make_items, make_users

# Each planted row breaks one rule; the value is the reason it must be quarantined with.
PLANTED = {
    "missing_user_id": {"user_id": ""},
    "missing_item_id": {"item_id": ""},
    "unparsable_timestamp": {"ts": "yesterday"},
    "unparsable_amount": {"holdings": "lots"},
    "negative_amount": {"holdings": "-3.5"},
    "unknown_scenario": {"scenario": "casino"},
    "label_not_binary:click": {"click": "2"},
    "non_finite_amount": {"holdings": "inf"},
    "non_finite_timestamp": {"ts": "inf"},
    "future_timestamp": {"ts": "4102444800"},  # 2100-01-01: would own the valid and test splits
    "chain_violation:conversion_without_click": [{"click": "0", "conversion": "1"}, {"click": "", "conversion": "1"}],
    "chain_violation:large_invest_without_invest": {"invest": "0", "large_invest": "1"},
}


@pytest.fixture(scope="module")
def raw_logs(tmp_path_factory):
    """A CSV log with planted bad rows and a brand that appears only in the last days (the test split)."""
    cfg = WorldConfig(rows=12_000, n_users=800, n_items=60, days=10, seed=5)
    rows = impressions(cfg, 0, make_users(cfg), make_items(cfg)).astype(str)
    late = rows.index[-300:]
    rows.loc[late[::10], "brand"] = "brand_seen_only_in_test"
    bad = []
    for i, (reason, changes) in enumerate(PLANTED.items()):
        for j, change in enumerate(changes if isinstance(changes, list) else [changes, changes]):
            row = rows.iloc[100 * i + j].copy()
            for col, value in change.items():
                row[col] = value
            bad.append(row)
    logs = pd.concat([rows, pd.DataFrame(bad)], ignore_index=True)
    path = tmp_path_factory.mktemp("raw") / "logs.csv"
    logs.to_csv(path, index=False)
    return path, len(logs)


def csv_schema():
    """The synthetic schema reading CSV, the tree teacher off (tests/platform/test_teacher.py and the census fixture
    cover it)."""
    return no_teacher(load_schema("synthetic").model_copy(update={"source": Source(format="csv")}))


@pytest.fixture(scope="module")
def prepared(ray_session, raw_logs, tmp_path_factory):
    path, n = raw_logs
    schema = csv_schema()
    out = tmp_path_factory.mktemp("prep") / "data"
    report = preprocess(str(path), schema, out)
    return report, out, n


def test_rows_in_equal_rows_out_plus_quarantined(prepared):
    report, out, n = prepared
    assert report.rows_in == n
    assert report.conserved
    written = sum(len(pd.read_parquet(out / s)) for s in ("train", "valid", "test"))
    assert written + len(pd.read_parquet(out / "quarantine")) == n
    assert json.loads((out / "stats.json").read_text())["rows_in"] == n


def test_every_planted_row_is_quarantined_with_its_reason(prepared):
    report, out, _ = prepared
    quarantine = pd.read_parquet(out / "quarantine")
    assert report.reasons == {reason: 2 for reason in PLANTED}
    assert quarantine["_reason"].value_counts().to_dict() == {reason: 2 for reason in PLANTED}
    # the raw row is kept as it came, so it can be fixed and replayed
    assert set(quarantine.loc[quarantine["_reason"] == "unknown_scenario", "scenario"]) == {"casino"}


def test_split_respects_time(prepared):
    _, out, _ = prepared
    ts = {s: pd.read_parquet(out / s, columns=["ts"])["ts"] for s in ("train", "valid", "test")}
    assert ts["train"].max() < ts["valid"].min() and ts["valid"].max() < ts["test"].min()


def test_vocabularies_and_statistics_come_from_train_only(prepared, raw_logs):
    _, out, _ = prepared
    spec = FeatureSpec.load(out)
    encoder = Encoder.load(out)
    brand = next(f for f in encoder.categorical if f.name == "brand")
    assert "brand_seen_only_in_test" not in brand.vocabulary
    test = pd.read_parquet(out / "test")
    assert (test["f_brand"] == 0).sum() >= 30  # the test-only brand maps to the out-of-vocabulary id
    # the numeric mean is the train rows' mean, not all rows'
    train = pd.read_parquet(out / "train", columns=["ts"])
    raw = pd.read_csv(raw_logs[0], dtype=str)
    ts = pd.to_numeric(raw["ts"], errors="coerce")
    in_train = ts.between(train["ts"].min(), train["ts"].max())
    activity = np.log1p(pd.to_numeric(raw.loc[in_train, "activity"], errors="coerce").dropna().clip(lower=0))
    field = next(f for f in spec.numeric if f.name == "activity")
    # planted rows inside the train period are quarantined, so allow for their few values
    assert field.mean == pytest.approx(activity.mean(), rel=5e-3)
    assert field.log1p


def test_feature_spec_and_online_snapshots(prepared):
    _, out, _ = prepared
    spec = FeatureSpec.load(out / "feature_spec.json")
    assert spec.tiers == ["new", "low", "high"] and len(spec.scenarios) == 6
    assert spec.task_names == ["click", "conversion", "invest", "large_invest", "high_holding"]
    users = pd.read_parquet(out / "online" / "users")
    items = pd.read_parquet(out / "online" / "items")
    assert users["user_id"].is_unique and items["item_id"].is_unique
    assert set(users.columns) >= {"tier", "holdings", "f_age_band", "f_activity"}
    assert set(items.columns) >= {"scenario", "f_item_id", "f_promo"}
    # the snapshot is each user's latest row
    all_rows = pd.concat(pd.read_parquet(out / s) for s in ("train", "valid", "test"))
    latest = all_rows.sort_values("ts").groupby("user_id").tail(1).set_index("user_id")
    snap = users.set_index("user_id")
    assert (snap["ts"] == latest.loc[snap.index, "ts"]).all()


def test_partials_hash_partitioned_by_key_combine_as_those_gathered_in_one_block(ray_session):
    # a log of up to GATHER_ROWS rows gathers its blocks' partial results (counts per value, latest rows per key) in one
    # block; a larger log hash-partitions them by key, one partition per GATHER_ROWS rows
    rng = np.random.default_rng(0)
    blocks = [pd.DataFrame({"column": rng.choice(["a", "b"], 500), "value": rng.integers(0, 50, 500).astype(str), "n": 1.0})
              for _ in range(4)]
    keys = ["column", "value"]
    expected = pd.concat(blocks).groupby(keys, as_index=False)["n"].sum()
    for rows in (GATHER_ROWS, 3 * GATHER_ROWS):  # one block; three hash partitions
        totals = combine_by_key(ray_session.data.from_pandas(blocks), keys, rows,
                                lambda b: b.groupby(keys, as_index=False)["n"].sum(), {}).to_pandas()
        pd.testing.assert_frame_equal(totals.sort_values(keys, ignore_index=True), expected, check_dtype=False)  # Arrow strings


def test_a_pass_over_read_rows_runs_in_the_read_tasks_in_bounded_batches(ray_session, tmp_path):
    # Ray Data runs a map that asks for a batch size as a second operator after a read, its waiting reads each holding
    # a CPU; map_in_slices is fused into the read and slices each block itself
    def rows_seen(batch: pd.DataFrame) -> pd.DataFrame:  # defined here, so Ray's workers get it by value
        return pd.DataFrame({"x": batch["x"].to_numpy(), "batch_rows": len(batch)})

    for i in range(3):
        pd.DataFrame({"x": np.arange(20) + 20 * i}).to_parquet(tmp_path / f"part{i}.parquet")
    seen = map_in_slices(ray_session.data.read_parquet(str(tmp_path), override_num_blocks=3), rows_seen, {}, rows=7).materialize()
    assert "ReadParquet->MapBatches(rows_seen)" in seen.stats()  # one operator: the read's tasks run the pass
    rows = seen.to_pandas()
    assert sorted(rows["x"]) == list(range(60)) and set(rows["batch_rows"]) == {7, 6}  # every row once, 7 + 7 + 6 a file
    # one file on 2 CPUs: Ray splits it to spread the work, a split read is never fused, and Ray gathers the batches
    one = map_in_slices(ray_session.data.read_parquet(str(tmp_path / "part0.parquet")), rows_seen, {}, rows=7).to_pandas()
    assert sorted(one["x"]) == list(range(20)) and one["batch_rows"].max() <= 7


def test_a_keyed_shuffle_runs_as_tasks_with_no_aggregator_actors(ray_session):
    # Ray Data's actor hash shuffle reserves each aggregator's memory from the whole data, up to a node's: past a few
    # GiB its aggregators never fit and the shuffle waits for ever (a 50 M-row log's snapshots did). Ray's own
    # SHUFFLE_V2, which ray_env leaves in place, runs map and reduce tasks that reserve memory per block
    def aggregators() -> set[str]:
        return {a.actor_id for a in session_actors(("class_name", "=", "HashShuffleAggregator"))}

    before = aggregators()
    blocks = [pd.DataFrame({"user_id": [f"u{i % 4}"], "ts": [float(i)]}) for i in range(6)]
    latest = combine_by_key(ray_session.data.from_pandas(blocks), ["user_id"], 3 * GATHER_ROWS, _latest,
                            {"key": "user_id", "order": "ts"}).to_pandas()  # as the snapshots combine
    assert sorted(latest["ts"]) == [2.0, 3.0, 4.0, 5.0]  # each user's latest row, once
    assert aggregators() == before


def test_too_many_rejects_fail_clearly_and_keep_the_quarantine(ray_session, raw_logs, tmp_path):
    schema = csv_schema()
    schema.preprocess.max_reject_fraction = 0.0001
    with pytest.raises(PreprocessError, match="over the allowed"):
        preprocess(str(raw_logs[0]), schema, tmp_path / "out")
    assert len(pd.read_parquet(tmp_path / "out" / "quarantine")) == 2 * len(PLANTED)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["quarantine"]  # nothing half-written is left
    # so the same directory takes a rerun (with a realistic limit): the failed run's leftovers are cleared
    schema.preprocess.max_reject_fraction = 0.05
    assert preprocess(str(raw_logs[0]), schema, tmp_path / "out").conserved
    with pytest.raises(PreprocessError, match="already holds a preprocessed dataset"):
        preprocess(str(raw_logs[0]), schema, tmp_path / "out")


def test_census_income_preprocesses_end_to_end(census_data):
    with gzip.open(CENSUS_SAMPLE, "rt") as f:
        n = sum(1 for _ in f)
    stats = json.loads(DataDir(census_data).stats_file.read_text())
    assert stats["rows_in"] == n and sum(stats["rows_out"].values()) + stats["rows_quarantined"] == n
    train = pd.read_parquet(DataDir(census_data).split("train"))
    assert train["label_income"].mean() == pytest.approx(0.061, abs=0.015)
    assert train["label_never_married"].mean() == pytest.approx(0.433, abs=0.03)
    assert set(train["tier"]) == {0, 1, 2}
    spec = FeatureSpec.load(census_data)
    assert spec.task_names == ["income", "never_married"]
    # no user id column: each row is its own user, never merged with another row of equal features
    assert train["user_id"].nunique() == train["user_id"].size


def test_the_train_split_alone_carries_the_out_of_fold_teacher(census_data):
    data = DataDir(census_data)
    train, valid = pd.read_parquet(data.split("train")), pd.read_parquet(data.split("valid"))
    assert not any(c.startswith("teacher_") for c in valid.columns)  # valid and test are judged on labels alone
    for task in ("income", "never_married"):
        p = train[f"teacher_{task}"]
        assert p.between(0, 1).all() and roc_auc_score(train[f"label_{task}"], p) > 0.8, task


def _assert_edges_span_train(spec: FeatureSpec, train: pd.DataFrame) -> None:
    for f in spec.numeric:
        assert f.bins == sorted(set(f.bins)) and len(f.bins) >= 2, f.name
        z = train[f"f_{f.name}"]
        assert f.bins[0] == pytest.approx(z.min(), abs=0.05) and f.bins[-1] == pytest.approx(z.max(), abs=0.05), f.name


def test_numeric_bins_are_tree_splits_of_the_train_labels_in_the_one_encoder(census_data):
    data = DataDir(census_data)
    spec, encoder = FeatureSpec.load(census_data), Encoder.load(data.encoder_file)
    train = pd.read_parquet(data.split("train"))
    _assert_edges_span_train(spec, train)
    assert [f.bins for f in encoder.numeric] == [f.bins for f in spec.numeric]  # what serving's model is built from
    assert all(len(f.bins) <= load_schema("census_income").preprocess.numeric_bins + 1 for f in spec.numeric)
    # income rises with weeks worked: the tree's bins separate rows of clearly different income rates
    weeks = next(f for f in spec.numeric if f.name == "weeks_worked")
    inner = list(weeks.bins[1:-1])
    rates = [train.loc[(train["f_weeks_worked"] > lo) & (train["f_weeks_worked"] <= hi), "label_income"].mean()
             for lo, hi in zip([-np.inf, *inner], [*inner, np.inf])]
    assert inner and max(rates) - min(rates) > 0.05


def test_quantile_bins_are_train_quantiles_and_reach_into_mostly_zero_amounts(ray_session, tmp_path):
    path, schema = _census_parquet(tmp_path, 3_000)
    schema = schema.model_copy(update={"preprocess": schema.preprocess.model_copy(update={"numeric_bin_edges": "quantile", "teacher": False})})
    preprocess(str(path), schema, tmp_path / "out")
    spec, train = FeatureSpec.load(tmp_path / "out"), pd.read_parquet(DataDir(tmp_path / "out").split("train"))
    _assert_edges_span_train(spec, train)
    gains = next(f for f in spec.numeric if f.name == "capital_gains")
    z = train["f_capital_gains"]
    zero = z.mode()[0]
    assert (z == zero).mean() > 0.9  # mostly zero: plain quantiles would give its non-zero values one bin
    assert sum(edge > zero + 1e-6 for edge in gains.bins) >= 8


def _census_parquet(tmp_path, rows: int):
    schema = load_schema("census_income")
    frame = pd.read_csv(CENSUS_SAMPLE, header=None, names=schema.source.csv.column_names, nrows=rows, dtype=str)
    path = tmp_path / "census.parquet"
    frame.to_parquet(path)
    return path, schema.model_copy(update={"source": Source(format="parquet")})


def _truncated(tmp_path):
    path, schema = _census_parquet(tmp_path, 200)
    path.write_bytes(path.read_bytes()[:2000])
    return path, schema, "magic bytes|Parquet"


def _empty(tmp_path):
    path, schema = _census_parquet(tmp_path, 0)
    return path, schema, "no rows read"


def _latin1(tmp_path):
    path = tmp_path / "census.csv"
    text = gzip.open(CENSUS_SAMPLE, "rb").read()[:50_000]
    path.write_bytes(text.replace(b"Not in universe", "Não in universe".encode("latin-1"), 3))
    return path, load_schema("census_income"), r"not UTF-8 text: byte 0xe3"


def _cut_json_line(tmp_path):
    cfg = WorldConfig(rows=3_000, n_users=200, n_items=30, days=5, seed=2)
    lines = impressions(cfg, 0, make_users(cfg), make_items(cfg)).to_json(orient="records", lines=True).splitlines()
    lines[2_000] = lines[2_000][:25]  # line 2,001 cut off mid-record
    path = tmp_path / "logs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, load_schema("synthetic").model_copy(update={"source": Source(format="json")}), r"line 2001 is not a JSON object"


@pytest.mark.parametrize("make", [_truncated, _empty, _latin1, _cut_json_line],
                         ids=["truncated-parquet", "empty-parquet", "latin1-csv", "cut-json-line"])
def test_an_unreadable_source_is_one_line_naming_the_file_and_leaves_nothing(ray_session, tmp_path, make):
    path, schema, why = make(tmp_path)
    with pytest.raises(TamorError, match=why) as info:
        preprocess(str(path), schema, tmp_path / "out")
    assert str(path) in str(info.value) or "no rows" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_every_file_of_a_source_directory_is_read_or_the_source_is_refused(ray_session, raw_logs, tmp_path):
    path, n = raw_logs
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    source = tmp_path / "logs"
    source.mkdir()
    frame.iloc[: n // 2].to_csv(source / "a.csv", index=False, encoding="utf-8-sig")  # a BOM before the header
    frame.iloc[n // 2 :].to_csv(source / "B.CSV.gz", index=False, compression="gzip")  # any case, compressed
    schema = csv_schema()
    report = preprocess(str(source), schema, tmp_path / "both")
    assert report.rows_in == n and report.conserved  # both files, every row
    frame.iloc[:100].to_parquet(source / "c.parquet")  # a file the CSV reader would skip: refused, named
    with pytest.raises(TamorError, match=r"1 file\(s\) in the source are not csv .*c\.parquet"):
        preprocess(str(source), schema, tmp_path / "mixed")
    (source / "c.parquet").unlink()
    (source / "d.csv").write_text(",".join(frame.columns) + "\n")  # a header and no rows: nothing read from it
    with pytest.raises(TamorError, match=r"no rows read from 1 of the source's 3 files: .*d\.csv"):
        preprocess(str(source), schema, tmp_path / "empty")
