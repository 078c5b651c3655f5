"""Training/serving skew: what training saw is what serving computes.

1. Raw rows with every kind of value (ints, floats written as ints, strings, missing, unseen,
   unicode, padded text, extreme numbers) go through the Ray Data preprocessing path and through the
   serving path (the FeatureLookup's encoding of a JSON request) and give identical tensors.
2. One raw impression scored by ``POST /recommend`` equals ``model(batch)`` offline on the same row.

Both on the synthetic schema and on the census schema (CSV text offline, JSON numbers online).
"""

from __future__ import annotations

import gzip
import json
import math

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import CENSUS_SAMPLE, TINY, no_teacher
from tamor.models.factory import build_model, load_model, save_model
from tamor.models.inputs import batch_from_columns
from tamor.platform.data_dir import SPLITS, DataDir
from tamor.platform.preprocess import preprocess
from tamor.platform.registry import Registry
from tamor.platform.schema import load_schema
from tamor.platform.validate import KEY, check_batch
from tamor.platform.world import WorldConfig, impressions, make_items, make_users


def as_json(value):
    """A raw value as a JSON client sends it: numbers stay numbers, missing is null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return json.loads(json.dumps(value))


def encoded_rows(data: DataDir) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(data.split(s)) for s in SPLITS if any(data.split(s).iterdir())], ignore_index=True)


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


def test_a_synthetic_impression_scores_the_same_over_http_as_offline(serve_url, synthetic_data):
    url, _ = serve_url
    data = DataDir(synthetic_data)
    raw = pd.concat(pd.read_parquet(p) for p in sorted((synthetic_data.parent / "logs").glob("*.parquet")))
    test = pd.read_parquet(data.split("test"))
    row = test.iloc[len(test) // 2]
    raw_row = raw[(raw["ts"] == row["ts"]) & (raw["user_id"] == row["user_id"]) & (raw["item_id"] == row["item_id"])].iloc[0]
    context = {f.name: as_json(raw_row[f.name]) for f in data.spec().categorical_on("context") + data.spec().numeric_on("context")}
    answer = httpx.post(f"{url}/recommend", json={"user_id": row["user_id"], "item_ids": [row["item_id"]], "context": context}, timeout=30)
    assert answer.status_code == 200, answer.text
    served = answer.json()["items"][0]["probabilities"]

    version = httpx.get(f"{url}/version", timeout=10).json()
    model = load_model(Registry(serve_url[1].registry).local_model_file(version["model_version"]))
    spec = model.spec
    offline = model.predict_proba(batch_from_columns(spec, {c: np.asarray([row[c]]) for c in test.columns if c.startswith(("f_", "tier", "scenario"))}))
    for t, task in enumerate(spec.task_names):
        assert served[task] == pytest.approx(float(offline[0, t]), abs=1e-6)


# ------------------------------------------------------------------------------------------ census


def census_json_value(text: str):
    """A census CSV cell as a JSON client would send it: a number when it is one, else the text."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


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


def test_a_census_impression_scores_the_same_over_http_as_offline(serve_url, census_data, tmp_path):
    from ray import serve

    from tamor.serve.app import AppArgs, build_app

    data = DataDir(census_data)
    model = build_model(TINY, data.spec(), data.encoder())
    save_model(model, tmp_path / "model.pt")
    url, _ = serve_url
    args = AppArgs(data_dir=str(census_data), checkpoint=str(tmp_path / "model.pt"), ranker_cpus=0.1)
    serve.run(build_app(args.model_dump()), name="census", route_prefix="/census")
    try:
        key, item_cols = data.spec().online_columns("items")
        items = pd.read_parquet(data.online("items"))[[key, *item_cols]]
        row = encoded_rows(data).merge(items, on=[key, *item_cols]).iloc[0]  # a row whose item features are the store's
        with gzip.open(CENSUS_SAMPLE, "rt") as f:
            raw = pd.DataFrame([line.rstrip("\n").split(",") for line in f], columns=load_schema("census_income").source.csv.column_names)
        raw["user_id"] = np.char.add("r", check_batch(raw, load_schema("census_income"))[KEY].to_numpy(dtype=np.uint64).astype(str))
        raw_row = raw[raw["user_id"] == row["user_id"]].iloc[0]
        context = {f.name: census_json_value(raw_row[f.name]) for f in data.spec().categorical_on("context")}
        answer = httpx.post(f"{url}/census/recommend", json={"user_id": row["user_id"], "item_ids": [row["item_id"]], "context": context}, timeout=60)
        assert answer.status_code == 200, answer.text
        served = answer.json()["items"][0]["probabilities"]
        cols = {c: np.asarray([row[c]]) for c in row.index if c.startswith("f_") or c in ("tier", "scenario")}
        offline = model.predict_proba(batch_from_columns(model.spec, cols))
        for t, task in enumerate(model.spec.task_names):
            assert served[task] == pytest.approx(float(offline[0, t]), abs=1e-6)
    finally:
        serve.delete("census")
