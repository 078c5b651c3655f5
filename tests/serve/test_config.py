"""The generated `serve deploy` config is valid Serve schema and names the graph's real deployments."""

import yaml
from ray.serve.schema import ServeDeploySchema

from tamor.serve.app import AppArgs, write_serve_config
from tamor.serve.deployments import FeatureLookup, Ingress
from tamor.serve.ranker import Ranker


def test_written_config_validates_and_matches_the_graph(tmp_path):
    path = tmp_path / "serve.yaml"
    write_serve_config(path, AppArgs(data_dir="d", registry="r"), port=8123)
    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    app = schema.applications[0]
    assert app.import_path == "tamor.serve.app:build_app"
    names = {d.name for d in app.deployments}
    assert names == {d.name for d in (FeatureLookup, Ingress, Ranker)}  # no misspelt deployment
    assert raw["http_options"] == {"host": "127.0.0.1", "port": 8123}
    ranker = next(d for d in raw["applications"][0]["deployments"] if d["name"] == "Ranker")
    assert ranker["autoscaling_config"]["max_replicas"] >= 1 and ranker["user_config"]["ref"] == "latest"
    assert all(d["ray_actor_options"]["num_cpus"] < 1 for d in raw["applications"][0]["deployments"])
    AppArgs.model_validate(app.args)  # the args are what the builder accepts
