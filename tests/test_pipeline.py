"""`tamor pipeline`: train → evaluate → export → promotion gate, run in-process on the test Ray.

The second run trains a deliberately worse model (one epoch at a learning rate that barely moves the
weights) on logs with other vocabularies: the gate scores the production model on the same test rows
through its own encoder, refuses the new one, and production stays where it was."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from helpers import TINY, preprocessed_world
from tamor.cli.pipeline import PipelineConfig, run_pipeline
from tamor.platform.data_dir import DataDir
from tamor.platform.registry import Registry


def pipeline(data: Path, out: Path, registry: Path, **train) -> dict:
    tc = {"model": TINY, "epochs": 2, "lr": 0.01, "batch_size": 1024, "num_workers": 1, "placement_strategy": "PACK", **train}
    cfg = PipelineConfig(data_dir=str(data), out=str(out), registry=str(registry), train=tc, deploy=False)
    return run_pipeline(cfg, Console(quiet=True))


@pytest.fixture(scope="module")
def other_logs(ray_session, tmp_path_factory) -> Path:
    """Logs of another week: the same tasks and tiers, other users and items (another encoder)."""
    return preprocessed_world(tmp_path_factory.mktemp("other-week"), teacher=False, rows=14_000, n_users=800, n_items=100, days=7,
                              seed=11, rows_per_block=14_000)


def test_the_gate_promotes_a_first_model_and_refuses_a_worse_one(synthetic_data, other_logs, tmp_path):
    registry = tmp_path / "registry"
    first = pipeline(synthetic_data, tmp_path / "day1", registry)
    assert first["exported"] == "v0001" and first["gate"]["promote"] and first["gate"]["production"] == "v0001"
    assert len(first["train"]["worker_nodes"]) == 1

    assert DataDir(other_logs).encoder().fingerprint != DataDir(synthetic_data).encoder().fingerprint
    worse = pipeline(other_logs, tmp_path / "day2", registry, lr=1e-7, epochs=1, distill=0.0)  # other_logs has no teacher
    gate = worse["gate"]
    assert worse["exported"] == "v0002" and not gate["promote"] and gate["cells_worse"]
    assert gate["current"] == "v0001" and Registry(registry).resolve("production").name == "v0001"
    table = pd.read_csv(tmp_path / "day2" / "gate.csv")
    assert table["judged"].any() and (table.loc[table["worse"], "high"] < 0).all()  # behind beyond each interval
    assert json.loads((tmp_path / "day2" / "pipeline.json").read_text())["gate"]["reason"].startswith("refused")
    logged = ""
    for _ in range(60):  # W&B's service writes the offline run file asynchronously
        logged = "".join(p.read_text(errors="ignore") for p in (tmp_path / "day2" / "wandb").rglob("*.wandb"))
        if "refused" in logged:
            break
        time.sleep(0.5)
    assert "gate" in logged and "refused" in logged  # the decision and its job type, in the run's W&B record
