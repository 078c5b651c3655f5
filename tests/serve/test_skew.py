"""Training/serving skew: what training saw is what serving computes.

Raw rows with every kind of value (ints, floats written as ints, strings, missing, unseen, unicode, padded text,
extreme numbers) go through the Ray Data preprocessing path and through the serving path (the FeatureLookup's
encoding of a JSON request) and give identical tensors, on the synthetic schema and on the census schema (CSV text
offline, JSON numbers online). That one raw impression scored by ``POST /recommend`` equals ``model(batch)`` offline
is tests/serve/test_app.py's, on its running app.
"""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import CENSUS_SAMPLE, as_json, census_json_value, encoded_rows, no_teacher
from tamor.models.inputs import batch_from_columns
from tamor.platform.data_dir import DataDir
from tamor.platform.preprocess import preprocess
from tamor.platform.schema import load_schema
from tamor.platform.validate import KEY, check_batch
from tamor.platform.world import WorldConfig, impressions, make_items, make_users


def assert_same_inputs(data: DataDir, schema_name: str, offline: pd.DataFrame, requests: list[dict]) -> None:
    """Each request (raw values as JSON) encodes as serving does to exactly the offline row's tensors."""
    spec, encoder, schema = data.spec(), data.encoder(), load_schema(schema_name)
    for (_, row), request in zip(offline.iterrows(), requests):
        online = encoder.encode(request, n=1)
        online["tier"] = encoder.tier_ids([request[schema.tiers.column]])
        online["scenario"] = encoder.scenario_ids([request[schema.scenario.column]])
        offline_cols = {c: np.asarray([row[c]]) for c in online}
        a, b = batch_from_columns(spec, offline_cols), batch_from_columns(spec, online)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{key} differs for raw row {request}: offline {a[key]} online {b[key]}"


# ------------------------------------------------------------------------------------------ synthetic


@pytest.fixture(scope="module")
def synthetic_mixed(ray_session, tmp_path_factory):
    """A synthetic log whose columns carry every kind of raw value, preprocessed by Ray Data."""
    world = WorldConfig(rows=3000, n_users=300, n_items=60, seed=5)
    raw = impressions(world, 0, make_users(world), make_items(world)).reset_index(drop=True)
    n = len(raw)
    rng = np.random.default_rng(0)
    raw["ts"] = raw["ts"].min() + np.arange(n) * 7  # unique: the join key back to the raw row
    raw["hour"] = raw["hour"].str[1:].astype(np.int64)  # a categorical stored as ints
    raw["risk_level"] = raw["risk_level"].str[4:].astype(np.float64)  # ... as floats written as ints
    raw["page"] = raw["page"].astype(object)
    raw.loc[rng.uniform(size=n) < 0.1, "page"] = "首页 ✓"  # unicode
    raw.loc[rng.uniform(size=n) < 0.1, "page"] = None  # missing: frequent, so the <missing> token has an id
    raw["device"] = raw["device"].astype(object)
    raw.loc[rng.uniform(size=n) < 0.1, "device"] = " ios "  # padded text
    raw["brand"] = raw["brand"].astype(object)
    raw.loc[n - 40 :, "brand"] = "brand_only_in_test"  # unseen in train: out of vocabulary
    raw.loc[rng.uniform(size=n) < 0.005, "region"] = "r_rare"  # under the minimum frequency
    extremes = [1e90, -1e90, 0.0, np.nan, 1e-300, 123456789012.0]  # beyond ±1e100 is quarantined
    raw.loc[: len(extremes) - 1, "promo"] = extremes
    raw.loc[rng.uniform(size=n) < 0.05, "position"] = np.nan
    raw.loc[rng.uniform(size=n) < 0.05, "activity"] = np.nan
    root = tmp_path_factory.mktemp("skew-synthetic")
    (root / "logs").mkdir()
    raw.to_parquet(root / "logs" / "part.parquet")
    report = preprocess(str(root / "logs"), no_teacher(load_schema("synthetic")), root / "data")
    assert report.rows_quarantined == 0
    return raw, DataDir(root / "data")


def test_synthetic_raw_values_encode_the_same_offline_and_online(synthetic_mixed):
    raw, data = synthetic_mixed
    encoder = data.encoder()
    page = next(f for f in encoder.categorical if f.name == "page")
    assert "<missing>" in page.vocabulary and "首页 ✓" in page.vocabulary and "ios" in next(
        f for f in encoder.categorical if f.name == "device").vocabulary
    offline = encoded_rows(data).set_index("ts").loc[raw["ts"]].reset_index()
    # every planted row, and a spread of the rest
    picks = sorted(set(range(len(raw) - 45, len(raw))) | set(range(10)) | set(range(0, len(raw), 37)))
    requests = [{k: as_json(v) for k, v in raw.iloc[i].items()} for i in picks]
    assert_same_inputs(data, "synthetic", offline.iloc[picks], requests)
    # a client may send the same category as 20, 20.0 or "20"
    kinds = [encoder.encode({"hour": v, "risk_level": w}, sides=["context", "item"], n=1) for v, w in ((20, 3), (20.0, 3.0), ("20", "3"))]
    assert all(k["f_hour"][0] == kinds[0]["f_hour"][0] != 0 and k["f_risk_level"][0] == kinds[0]["f_risk_level"][0] for k in kinds)


# ------------------------------------------------------------------------------------------ census


def test_census_raw_values_encode_the_same_offline_and_online(census_data):
    data = DataDir(census_data)
    schema = load_schema("census_income")
    names = schema.source.csv.column_names
    with gzip.open(CENSUS_SAMPLE, "rt") as f:
        lines = [line.rstrip("\n").split(",") for line in f]
    raw = pd.DataFrame(lines, columns=names)
    offline = encoded_rows(data)
    # join back on the row hash that names each census row's user (no user id column)
    keys = check_batch(raw, schema)[KEY].to_numpy(dtype=np.uint64)
    raw["user_id"] = np.char.add("r", keys.astype(str))
    raw = raw.drop_duplicates("user_id", keep=False).reset_index(drop=True)
    offline = offline.drop_duplicates("user_id", keep=False).set_index("user_id").loc[raw["user_id"]].reset_index()
    picks = list(range(0, len(raw), 41))
    requests = [{k: census_json_value(v) for k, v in raw.iloc[i].items()} for i in picks]
    assert any(isinstance(r["year"], int) for r in requests)  # 94 / 95 arrive as numbers online, as text in the CSV
    assert_same_inputs(data, "census_income", offline.iloc[picks], requests)
