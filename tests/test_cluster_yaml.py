"""ray_cluster.yaml passes the preparation and validation that `ray up` runs before touching a cloud."""

import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from helpers import REPO


@pytest.fixture
def cluster():
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_cluster_yaml_validates_with_a_cpu_head_and_gpu_workers(cluster):
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpu_groups = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_groups and all(0 <= g["min_workers"] <= g["max_workers"] <= prepared["max_workers"] for g in gpu_groups)
    assert any("pip install" in c and "-e ." in c for c in prepared["setup_commands"])


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["available_node_types"]["gpu_worker"].update(max_workerz=3),  # a misspelt key
        lambda c: c.update(head_node_type="missing"),
        lambda c: c["provider"].pop("type"),
    ],
)
def test_a_broken_cluster_yaml_fails_validation(cluster, breakage):
    breakage(cluster)
    with pytest.raises(Exception):
        validate_config(prepare_config(cluster))


def test_the_dashboard_is_bound_to_loopback_only(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
