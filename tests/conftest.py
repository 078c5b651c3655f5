"""Shared fixtures: one local Ray per test session, and a small synthetic world preprocessed once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

from helpers import CENSUS_SAMPLE, preprocessed_world, ray_state_lines


@pytest.fixture(scope="session")
def ray_session():
    """A 2-CPU local Ray, started once for the whole session."""
    import ray
    import ray.cloudpickle

    import helpers
    from tamor.platform.ray_env import init_ray

    ray.cloudpickle.register_pickle_by_value(helpers)  # Ray's workers cannot import the tests' helpers (FailOnce)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_data(ray_session, tmp_path_factory) -> Path:
    """A small synthetic world, generated and preprocessed once: returns the preprocessed directory."""
    return preprocessed_world(tmp_path_factory.mktemp("synthetic"), rows=30_000, n_users=1_500, n_items=120, days=10, seed=7,
                              rows_per_block=15_000)


@pytest.fixture(scope="session")
def census_data(ray_session, tmp_path_factory) -> Path:
    """The first 5,000 rows of UCI census-income (shipped in tests/data), preprocessed once."""
    from tamor.platform.preprocess import preprocess
    from tamor.platform.schema import load_schema

    out = tmp_path_factory.mktemp("census") / "data"
    preprocess(str(CENSUS_SAMPLE), load_schema("census_income"), out)
    return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A Ray test that times out prints what Ray holds (free CPUs, live actors, the trials' and trainers' last log lines)
    before it fails: a hang in CI then says where it waited."""
    report = yield
    if report.failed and call.excinfo is not None and "Timeout" in str(call.excinfo.value) and "ray_session" in item.fixturenames:
        reporter = item.config.pluginmanager.get_plugin("terminalreporter")
        for line in ray_state_lines():
            reporter.write_line(line)
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs Ray (directly or through a data/serving fixture) is ``slow``:
    ``pytest -m "not slow"`` is the fast loop, the full suite is the README's test command."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
