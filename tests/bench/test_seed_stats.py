"""The benchmark's seed-draw statistic (bench/seed_stats.py): how often a k-seed mean comes out ahead."""

import numpy as np
import pandas as pd
import pytest
from seed_stats import seed_draws


def per_fit_aucs(model: str, level: float, seeds: int, spread: float, rng: np.random.Generator) -> pd.DataFrame:
    """``seeds`` fits of one model on four cells: AUC ``level`` plus independent noise of sd ``spread`` per fit and cell."""
    cells = [("income", "all"), ("income", "low"), ("married", "all"), ("married", "low")]
    return pd.DataFrame([{"model": model, "seed": s, "task": t, "group": g, "auc": level + rng.normal(scale=spread)}
                         for s in range(seeds) for t, g in cells])


def test_seed_draws_say_how_often_a_k_seed_mean_comes_out_ahead():
    """A model better by far more than its seeds' spread is ahead in every draw; a model against itself (A/A) is
    ahead in half the draws of each cell but in every cell at once far less often: the chance a tie passes an
    'at or above in every cell' test on one draw of seeds."""
    rng = np.random.default_rng(0)
    fits = pd.concat([per_fit_aucs("a", 0.95, 8, 0.002, rng), per_fit_aucs("b", 0.90, 5, 0.002, rng)])
    ahead = seed_draws(fits, "a", "b", k=3)
    assert list(ahead["task"]) == ["income", "income", "married", "married", "every cell"]
    assert (ahead["share"] == 1.0).all() and (ahead["draws"] == 56 * 10).all()  # C(8,3) × C(5,3)
    assert (ahead["low"].dropna() > 0.04).all()
    itself = seed_draws(fits, "a", "a", k=3)
    assert (itself["draws"] == 56 * 10).all()  # ordered pairs of disjoint 3-subsets of 8 seeds
    assert (itself["share"][:4] == 0.5).all()  # each pair is drawn both ways round
    assert itself["share"].iloc[-1] < 0.2
    assert (itself["low"].dropna() < 0).all() and (itself["high"].dropna() > 0).all()
    with pytest.raises(ValueError, match="needs at least 6 seeds"):
        seed_draws(fits, "b", "b", k=3)
    with pytest.raises(ValueError, match="fewer than the 6"):
        seed_draws(fits, "a", "b", k=6)  # b has 5


def test_seed_draws_can_read_the_means_as_a_table_printed_to_four_decimals_does():
    """Two models a hundred-thousandth apart in every fit: behind in every draw at full precision, level (so at
    or above) when the means are compared as printed to four decimals."""
    a = per_fit_aucs("a", 0.99470, 4, 0.0, np.random.default_rng(0))
    b = a.assign(model="b", auc=a["auc"] + 0.00001)
    assert (seed_draws(pd.concat([a, b]), "a", "b", k=2)["share"] == 0.0).all()
    assert (seed_draws(pd.concat([a, b]), "a", "b", k=2, decimals=4)["share"] == 1.0).all()
