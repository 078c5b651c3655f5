"""The simulated online A/B test: deterministic for a seed, and it rewards a better policy."""

import pandas as pd

from tamor.platform.world import WorldConfig
from tamor.serve.policy import RerankPolicy
from tamor.serve.simulate import SimConfig, lift_with_ci, oracle_scorer, random_scorer, simulate

WORLD = WorldConfig(n_users=3000, n_items=90, seed=1)
POLICY = RerankPolicy(weights={t: {"large_invest": 1.0, "invest": 0.5} for t in ("new", "low", "high")})


def run(seed=2):
    return simulate(WORLD, {"oracle": oracle_scorer(WORLD), "random": random_scorer(0)}, SimConfig(days=5, seed=seed), POLICY)


def test_the_simulation_is_deterministic_for_a_seed():
    a, b = run(), run()
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(run(seed=3))


def test_an_oracle_policy_beats_a_random_one():
    daily = run()
    result = lift_with_ci(daily, "oracle", "random")
    assert result["new_high_holding"]["oracle"] > result["new_high_holding"]["random"]
    assert result["ci95"][0] > 0  # the whole interval favours the oracle
    assert set(daily.columns) == {"day", "arm", "visitors", "invests", "new_high_holding"}
