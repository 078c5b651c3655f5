"""The serving graph over real HTTP: ranked answers, cold start, 4xx for bad bodies, model updates, and one raw
impression scored as offline."""

import gzip
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from helpers import CENSUS_SAMPLE, TINY, as_json, census_json_value, encoded_rows, wait_until
from tamor.models.factory import build_model, load_model, save_model
from tamor.models.inputs import batch_from_columns
from tamor.platform.data_dir import DataDir
from tamor.platform.registry import Registry
from tamor.platform.schema import load_schema
from tamor.platform.validate import KEY, check_batch


@pytest.fixture(scope="module")
def known(synthetic_data):
    users = pd.read_parquet(synthetic_data / "online" / "users")
    items = pd.read_parquet(synthetic_data / "online" / "items")
    return users, items


def post(url, body):
    return httpx.post(f"{url}/recommend", json=body, timeout=30)


def test_a_known_user_gets_top_n_of_its_candidates_in_reranked_order(serve_url, known):
    url, _ = serve_url
    users, items = known
    user = users.iloc[0]
    candidates = items["item_id"].tolist()[:40]
    r = post(url, {"user_id": user["user_id"], "item_ids": candidates, "top_n": 8, "context": {"page": "home", "hour": "h9"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["cold_start_user"] and body["tier"] == ["new", "low", "high"][int(user["tier"])]
    ranked = body["items"]
    assert len(ranked) == 8 and {i["item_id"] for i in ranked} <= set(candidates)
    scores = [i["score"] for i in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(set(i["probabilities"]) == {"click", "conversion", "invest", "large_invest", "high_holding"} for i in ranked)
    assert max(pd.Series([i["scenario"] for i in ranked]).value_counts()) <= 3  # the default scenario cap
    assert body["model_version"] == "v0001"


def test_an_unknown_user_and_item_get_a_flagged_cold_start_answer(serve_url, known):
    url, _ = serve_url
    _, items = known
    r = post(url, {"user_id": "never-seen", "item_ids": ["card-from-the-future", *items["item_id"][:5]], "top_n": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cold_start_user"] and body["tier"] == "new"
    assert body["unknown_items"] == ["card-from-the-future"]
    assert [i["cold_start"] for i in body["items"] if i["item_id"] == "card-from-the-future"] in ([True], [])


def test_candidates_by_scenario(serve_url, known):
    url, _ = serve_url
    users, _ = known
    r = post(url, {"user_id": users["user_id"].iloc[1], "scenarios": ["fund", "gold"], "top_n": 5})
    assert r.status_code == 200, r.text
    assert {i["scenario"] for i in r.json()["items"]} <= {"fund", "gold"}


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": 42, "item_ids": ["i1"]},  # wrong type
        {"user_id": "u1", "item_ids": []},  # empty candidates
        {"user_id": "u1", "item_ids": [f"i{i}" for i in range(501)]},  # too many
        {"user_id": "u1", "item_ids": ["i1"], "colour": "red"},  # unknown field
        {"user_id": "u1"},  # no candidates at all
        {"user_id": "u1", "item_ids": ["i1"], "scenarios": ["fund"]},  # both
        {"user_id": "u1", "item_ids": ["i1"], "top_n": 0},
        {"user_id": "u1", "scenarios": ["casino"]},  # unknown scenario
        "not even an object",
    ],
)
def test_invalid_bodies_get_a_4xx_with_a_message_never_a_5xx(serve_url, body):
    url, _ = serve_url
    r = post(url, body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"]


def test_an_oversized_body_is_refused(serve_url):
    url, _ = serve_url
    r = httpx.post(f"{url}/recommend", content=b"{" + b" " * 100_000 + b"}", headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413


def test_health_version_and_openapi(serve_url):
    url, _ = serve_url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    version = httpx.get(f"{url}/version").json()
    assert version["model"] == "tamor" and version["feature_snapshot"].startswith("embedded:")
    schema = httpx.get(f"{url}/openapi.json").json()
    assert "/recommend" in schema["paths"]
    request = schema["components"]["schemas"]["RecommendRequest"]
    assert request["oneOf"] == [{"required": ["item_ids"]}, {"required": ["scenarios"]}]  # the rule, stated
    assert request["properties"]["context"]["propertyNames"]["enum"] == ["hour", "page", "position"]  # the data's context


def test_requests_generated_from_the_schema_get_no_5xx_and_answers_that_match_it(serve_url):
    # schemathesis, bounded and on loopback: schema-valid and invalid bodies get a 200 the schema describes or a 4xx
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection]
    operations = [op.ok() for op in schemathesis.openapi.from_url(f"{serve_url[0]}/openapi.json").get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/readyz", "/version"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def answered_as_described(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=checks)

        answered_as_described()


def test_a_model_and_policy_update_drops_no_request_and_serves_both(serve_url, registry_with_model, known, tmp_path):
    from tamor.serve.app import start
    from tamor.serve.policy import RerankPolicy

    url, args = serve_url
    users, items = known
    model = load_model(registry_with_model.local_model_file("latest"))
    save_model(model, tmp_path / "v2.pt")
    new = registry_with_model.export(tmp_path / "v2.pt", {"val_auc_mean": 0.6}, metric="val_auc_mean")
    body = {"user_id": users["user_id"].iloc[2], "item_ids": items["item_id"].tolist()[:30], "top_n": 5}
    top_scenario = post(url, body).json()["items"][0]["scenario"]
    hidden = RerankPolicy(exclude={tier: [top_scenario] for tier in ("new", "low", "high")})  # the Ingress's user_config
    statuses, answers, stop = [], [], threading.Event()

    def client():
        deadline = time.time() + 120
        while not stop.is_set() and time.time() < deadline:
            r = post(url, body)
            statuses.append(r.status_code)
            if r.status_code == 200:
                answers.append((r.json()["model_version"], {i["scenario"] for i in r.json()["items"]}))

    thread = threading.Thread(target=client)
    thread.start()
    wait_until(lambda: len(answers) >= 5, 60)  # the old model answers before the update
    start(args.model_copy(update={"ref": new.name, "policy": hidden}), port=int(url.rsplit(":", 1)[1]))  # redeploy
    wait_until(lambda: answers[-1][0] == new.name and top_scenario not in answers[-1][1], 60)
    switched = len(answers)
    wait_until(lambda: len(answers) >= switched + 5, 60)  # and the new ones go on answering
    stop.set()
    thread.join()
    versions = [v for v, _ in answers]
    assert statuses and set(statuses) == {200}, f"failed requests during the update: {sorted(set(statuses))}"
    assert versions[0] == "v0001" and top_scenario in answers[0][1] and versions[-1] == new.name
    assert np.all(np.diff([int(v[1:]) for v in versions]) >= 0)  # never back to the old model
    assert all(top_scenario not in scenarios for _, scenarios in answers[switched:])  # nor to the old policy
    start(args.model_copy(update={"ref": new.name}), port=int(url.rsplit(":", 1)[1]))  # the default policy, for the tests after
    wait_until(lambda: top_scenario in {i["scenario"] for i in post(url, body).json()["items"]}, 60)


@pytest.mark.parametrize("body, field", [
    ({"item_ids": ["i1", "i1"]}, "duplicate item ids"),
    ({"item_ids": [""]}, "item_ids"),
    ({"item_ids": ["i1"], "context": {"position": "abc"}}, "context.position"),
    ({"item_ids": ["i1"], "context": {"position": 1e308}}, "context.position"),
    ({"item_ids": ["i1"], "context": {"no_such_feature": "x"}}, "context.no_such_feature"),
])
def test_bad_fields_are_a_422_naming_the_field(serve_url, body, field):
    url, _ = serve_url
    answer = httpx.post(f"{url}/recommend", json={"user_id": "u1", **body}, timeout=30)
    assert answer.status_code == 422, answer.text
    named = {".".join(map(str, e["loc"][1:])) for e in answer.json()["detail"]}  # FastAPI's shape, ours too
    assert field in named or field in answer.text, answer.text


def test_non_finite_numbers_and_chunked_bodies_over_the_limit_are_refused(serve_url):
    url, _ = serve_url
    nan_body = '{"user_id": "u1", "item_ids": ["i1"], "context": {"position": NaN}}'
    answer = httpx.post(f"{url}/recommend", content=nan_body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 422, answer.text

    def chunks():
        yield b'{"user_id": "u1", "item_ids": ['
        for i in range(40_000):
            yield f'"i{i}",'.encode()
        yield b'"last"]}'

    answer = httpx.post(f"{url}/recommend", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code == 413, answer.text


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses with a TCP socket listening on ``port`` on this machine (``/proc/net/tcp``, as ``ss -ltn``)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_the_http_proxy_listens_on_loopback_only(serve_url):
    port = int(serve_url[0].rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}  # never 0.0.0.0 (docs/serving.md: sockets)


# ---------------------------------------------------- training/serving skew: one impression, over HTTP and offline
# (that every kind of raw value encodes alike offline and online is tests/serve/test_skew.py's)


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
