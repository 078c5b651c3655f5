"""Helpers shared by tests and benchmarks: a small feature spec and planted-signal batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tamor.models.config import ModelConfig
from tamor.models.feature_spec import CategoricalField, FeatureSpec, NumericField, TaskSpec

REPO = Path(__file__).resolve().parents[1]
CENSUS_SAMPLE = REPO / "tests" / "data" / "census-income-5k.csv.gz"  # see tests/data/README.md

TIERS = ["new", "low", "high"]
TINY = ModelConfig(embedding_dim=4, expert_dims=[16], tower_dims=[8], bias_dim=4, ple_levels=1)  # fast to build and run
SCENARIOS = ["money_market", "fund", "gold", "insurance"]


def make_spec(task_tiers: dict[str, list[str]] | None = None) -> FeatureSpec:
    task_tiers = task_tiers or {}
    tasks = [("click", "item"), ("conversion", "item"), ("invest", "item"), ("large_invest", "item"), ("high_holding", "user")]
    return FeatureSpec(
        dataset="test",
        categorical=[
            CategoricalField(name="age_band", side="user", vocab_size=6),
            CategoricalField(name="risk_pref", side="user", vocab_size=4),
            CategoricalField(name="item_id", side="item", vocab_size=30),
            CategoricalField(name="page", side="context", vocab_size=4),
        ],
        numeric=[
            NumericField(name="activity", side="user", mean=0, std=1),
            NumericField(name="promo", side="item", mean=0, std=1),
        ],
        tiers=TIERS,
        tier_thresholds=[0.01, 100],
        scenarios=SCENARIOS,
        tasks=[TaskSpec(name=n, level=lvl, tiers=task_tiers.get(n, TIERS)) for n, lvl in tasks],
    )


def planted_columns(spec: FeatureSpec, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random features whose labels follow a planted rule mixing item id, tier and a numeric."""
    rng = np.random.default_rng(seed)
    cols = {}
    for f in spec.categorical:
        cols[f"f_{f.name}"] = rng.integers(0, f.vocab_size, n)
    for f in spec.numeric:
        cols[f"f_{f.name}"] = rng.normal(size=n).astype(np.float32)
    cols["tier"] = rng.integers(0, len(spec.tiers), n)
    cols["scenario"] = cols["f_item_id"] % len(spec.scenarios)
    item_effect = np.sin(cols["f_item_id"] * 1.7) * 1.5
    tier_flip = np.where(cols["tier"] == 2, -1.0, 1.0)  # tiers disagree on items: tier awareness pays
    signal = item_effect * tier_flip + cols["f_activity"]
    for t, task in enumerate(spec.task_names):
        shift = 0.6 * t if task != "high_holding" else 0.0
        logit = (signal - shift) if task != "high_holding" else (1.5 * cols["f_activity"] + cols["tier"] - 1)
        cols[f"label_{task}"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * logit))).astype(np.float32)
        cols[f"mask_{task}"] = np.ones(n, dtype=np.float32)
    return cols
