"""The fault suite: bad model pushes and feature-store outages under live traffic, over real HTTP,
with a real redis-server. Each test counts the requests that failed while the fault lasted."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest
from conftest import RedisServer, free_port

from helpers import TINY, Traffic, wait_until
from tamor.models.errors import TamorError
from tamor.models.factory import build_model, save_model
from tamor.platform.data_dir import DataDir
from tamor.platform.registry import Registry
from tamor.serve.store import RedisStore


def load_snapshot(url: str, data: DataDir) -> dict[str, int]:
    return RedisStore(url, data.spec(), data.encoder()).load(data)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-faults"))
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def app(ray_session, synthetic_data, redis_server, tmp_path_factory):
    """The full graph on the Redis store, serving v0001 of its own registry."""
    from ray import serve

    from tamor.serve.app import AppArgs, start

    data = DataDir(synthetic_data)
    root = tmp_path_factory.mktemp("faults")
    save_model(build_model(TINY, data.spec(), data.encoder()), root / "good.pt")
    registry = Registry(root / "registry")
    registry.export(root / "good.pt", {"m": 0.5}, metric="m")
    load_snapshot(redis_server.url, data)
    port = free_port()
    args = AppArgs(data_dir=str(data.root), registry=str(registry.root), redis_url=redis_server.url, ranker_cpus=0.2)
    start(args, port=port)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 60)
    users = pd.read_parquet(data.online("users"))
    items = pd.read_parquet(data.online("items"))
    body = {"user_id": str(users["user_id"].iloc[3]), "item_ids": items["item_id"].astype(str).tolist()[:20], "top_n": 5}
    yield {"url": url, "port": port, "args": args, "registry": registry, "root": root, "body": body, "data": data}
    serve.shutdown()


def wrong_answers(traffic: Traffic) -> list:
    """200s that are wrong for a known user and known items: answered as cold start or unknown."""
    return [a for a in traffic.answers if a[2] == 200 and (a[3]["cold_start_user"] or a[3]["unknown_items"])]


def test_bad_model_pushes_fail_no_request_and_keep_the_serving_model(app, census_data):
    from ray import serve

    from tamor.serve.app import APP_NAME, start

    registry, root = app["registry"], app["root"]
    good = root / "good.pt"
    truncated = registry.export(good, {"m": 0.9}, metric="m")
    (root / "registry" / truncated.name / "model.pt").write_bytes(good.read_bytes()[:500])
    flipped = registry.export(good, {"m": 0.9}, metric="m")
    raw = bytearray(good.read_bytes())
    raw[-10] ^= 0xFF  # same size, other bytes: only the sha256 tells
    (root / "registry" / flipped.name / "model.pt").write_bytes(bytes(raw))
    census = DataDir(census_data)
    save_model(build_model(TINY, census.spec(), census.encoder()), root / "census.pt")
    foreign = registry.export(root / "census.pt", {"m": 0.9}, metric="m")

    with Traffic(app["url"], app["body"]) as traffic:
        traffic.wait_for_more()  # traffic flows first
        refused = {"v0099": "no version or alias", truncated.name: "corrupt", flipped.name: "sha256",
                   foreign.name: "trained with encoder"}
        for ref, why in refused.items():  # `tamor serve` checks first: the running app is not touched
            traffic.phase = ref
            with pytest.raises(TamorError, match=why):
                start(app["args"].model_copy(update={"ref": ref}), port=app["port"])
        # One that skips the check (a `serve deploy` config's user_config: Serve reconfigures the running
        # replica in place, as this call does): the Ranker refuses it and keeps serving, and says why.
        traffic.phase = "past the check"
        ranker = serve.get_deployment_handle("Ranker", APP_NAME)
        ranker.reconfigure.remote({"registry": str(registry.root), "ref": flipped.name}).result()
        assert "sha256" in httpx.get(f"{app['url']}/version", timeout=10).json()["last_model_error"]
        traffic.wait_for_more()
    print("bad pushes:", {p: traffic.statuses(p) for p in ("before", *refused, "past the check")})
    assert traffic.statuses() and set(traffic.statuses()) == {200}, traffic.statuses()
    assert {a[3]["model_version"] for a in traffic.answers} == {"v0001"}
    assert registry.resolve("latest").name == foreign.name  # `latest` skipped the corrupt ones (the replica pins v0001)
    start(app["args"].model_copy(update={"ref": "v0001"}), port=app["port"])  # a good deploy clears the error
    assert httpx.get(f"{app['url']}/version", timeout=10).json()["last_model_error"] is None


def kill_replicas(deployment: str) -> set[str]:
    """SIGKILL every replica of ``deployment`` (Serve starts new ones); their actor names."""
    import ray

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]]
    assert replicas, deployment
    for actor in replicas:
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    return {a["name"] for a in replicas}


def await_replacement(app: dict, deployment: str, killed: set[str]) -> list:
    """Poll until Serve runs a new replica of ``deployment`` and /readyz says 200; every /readyz status seen."""
    import ray

    readiness = []

    def replaced() -> bool:
        ready = httpx.get(f"{app['url']}/readyz", timeout=10)  # answers within its own 3 s per stage, 200 or 503
        readiness.append(ready.status_code)
        now = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if f"#{deployment}#" in a["name"]}
        return bool(now) and not now & killed and ready.status_code == 200

    wait_until(replaced, 90)
    return readiness


def test_a_ranker_replica_killed_under_load_gives_503s_and_its_replacement_loads_the_pinned_version(app):
    newer = app["registry"].export(app["root"] / "good.pt", {"m": 0.95}, metric="m")
    assert app["registry"].resolve("latest").name == newer.name
    with Traffic(app["url"], app["body"]) as traffic:
        traffic.wait_for_more()  # traffic flows first
        traffic.phase = "killed"
        readiness = await_replacement(app, "Ranker", kill_replicas("Ranker"))
        traffic.wait_for_more()
    print("ranker killed:", traffic.statuses("killed"), "readyz:", readiness)
    assert set(traffic.statuses()) <= {200, 503}, traffic.statuses()  # never a 500 or a dropped connection
    assert all(a[4] == "1" for a in traffic.answers if a[2] == 503)
    assert set(readiness) <= {200, 503}
    assert httpx.get(f"{app['url']}/version", timeout=10).json()["model_version"] == "v0001"  # pinned, not latest


def test_an_ingress_replica_killed_under_load_loses_at_most_the_requests_it_held(app):
    # Serve's HTTP proxy answers a request whose Ingress replica died under it with its own 500 (Ray offers no
    # public retry there): only the requests near the kill are lost; once replaced, every request is answered, and
    # /readyz answers 200 or 503 meanwhile.
    with Traffic(app["url"], app["body"]) as traffic:
        traffic.wait_for_more()  # traffic flows first
        traffic.phase = "killed"
        readiness = await_replacement(app, "Ingress", kill_replicas("Ingress"))
        traffic.phase = "replaced"
        traffic.wait_for_more()
    print("ingress killed:", {p: traffic.statuses(p) for p in ("before", "killed", "replaced")}, "readyz:", readiness)
    assert set(traffic.statuses("replaced")) == {200}, traffic.statuses("replaced")
    lost = [a[2] for a in traffic.answers if a[2] not in (200, 503)]
    # per client thread: the request in flight at the kill, and one routed before the proxy saw the death (a 500,
    # or, seen once in three runs, held until the client's timeout)
    assert set(lost) <= {500, "ReadTimeout"} and len(lost) <= 2 * traffic.threads, lost
    assert all(a[4] == "1" for a in traffic.answers if a[2] == 503)
    assert set(readiness) <= {200, 503}


def test_a_redis_outage_is_answered_503_and_serving_resumes_by_itself(app, redis_server):
    url = app["url"]
    with Traffic(url, app["body"]) as traffic:
        traffic.wait_for_more()
        traffic.phase = "down"
        redis_server.stop()
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503, 30)
        traffic.wait_for_more()
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        traffic.phase = "back empty"
        redis_server.start()  # restarted with nothing in it: not ready, never cold-start answers
        wait_until(lambda: "holds no snapshot" in str(httpx.get(f"{url}/readyz", timeout=10).json().get("problems")), 30)
        traffic.wait_for_more()
        traffic.phase = "reloaded"
        reloaded = time.time()
        load_snapshot(redis_server.url, app["data"])
        recovered = wait_until(lambda: any(a[0] > reloaded and a[2] == 200 for a in traffic.answers), 20)
        traffic.wait_for_more()
    print("redis outage:", {p: traffic.statuses(p) for p in ("before", "down", "back empty", "reloaded")}, f"recovered in {recovered:.2f} s")
    assert set(traffic.statuses()) <= {200, 503}, traffic.statuses()  # never a 500, a hang or a dropped connection
    assert traffic.statuses("down").get(503, 0) > 0 and traffic.statuses("back empty") == {503: traffic.statuses("back empty")[503]}
    assert all(a[4] == "1" for a in traffic.answers if a[2] == 503)  # every 503 says when to retry
    assert not wrong_answers(traffic)
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200


def test_features_load_under_traffic_switches_snapshots_atomically(app, redis_server):
    with Traffic(app["url"], app["body"]) as traffic:
        traffic.wait_for_more()  # traffic flows first
        traffic.phase = "loading"
        snapshots = []
        for _ in range(3):
            load_snapshot(redis_server.url, app["data"])
            snapshots.append(httpx.get(f"{app['url']}/version", timeout=10).json()["feature_snapshot"])
        traffic.wait_for_more()
    print("features load:", traffic.statuses("loading"))
    assert len(set(snapshots)) == 3  # three switches happened
    assert set(traffic.statuses()) == {200} and not wrong_answers(traffic)
    import redis

    keys = {k.decode() for k in redis.Redis.from_url(redis_server.url).keys("tamor:snap:*")}
    assert len({k.split(":")[2] for k in keys}) == 1  # old snapshots are dropped
