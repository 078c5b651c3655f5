"""The promotion gate: a new model is refused when a well-populated task × tier cell is behind beyond its paired
95% interval, and promoted when every difference is one these test rows cannot tell from none."""

import numpy as np

from tamor.platform.gate import GateConfig, Paired, compare

TIERS = ["new", "high"]


def paired(current_noise: float = 0.8, new_noise: float | None = None, high_tier_random: bool = False, n: int = 4000,
           positives_high: int | None = None) -> Paired:
    """One task (click) on ``n`` rows, half of them of the high tier; each model's score is the label plus noise."""
    rng = np.random.default_rng(3)
    tier = np.arange(n) % 2
    labels = rng.integers(0, 2, n).astype(float)
    if positives_high is not None:  # few high-tier positives: the cell is shown, not judged
        high_pos = np.flatnonzero((tier == 1) & (labels == 1))
        labels[high_pos[positives_high:]] = 0
    current = labels + rng.normal(0, current_noise, n)
    new = current + rng.normal(0, 0.02, n) if new_noise is None else labels + rng.normal(0, new_noise, n)
    if high_tier_random:  # better for the new tier, useless for the high tier
        new = np.where(tier == 1, rng.normal(0, 1, n), labels + rng.normal(0, 0.3, n))
    return Paired(["click"], TIERS, labels[:, None], np.ones((n, 1)), tier, new[:, None], current[:, None])


def test_the_first_model_is_promoted_when_nothing_is_in_production():
    first = paired()
    decision = compare(Paired(first.tasks, TIERS, first.labels, first.label_mask, first.tier, first.probs_new, None), GateConfig())
    assert decision.promote and "nothing in 'production'" in decision.reason


def test_a_difference_these_rows_cannot_tell_from_none_is_level_and_promoted():
    decision = compare(paired(), GateConfig())  # the new model is the current one plus a little noise
    table = decision.table
    assert decision.promote and decision.as_dict()["cells_judged"] == 3
    assert (table["low"] < 0).all() and (table["high"] > 0).all()  # every interval holds 0: level, not worse
    assert set(table["slice"]) == {"overall", "tier"}  # the gate judges users' tiers, not scenarios


def test_a_model_behind_for_one_tier_is_refused_even_if_ahead_for_another():
    decision = compare(paired(high_tier_random=True), GateConfig())
    assert not decision.promote
    table = decision.table.set_index("group")
    assert table.loc["new", "low"] > 0  # ahead beyond the noise for the new tier
    assert table.loc["high", "worse"] and table.loc["high", "high"] < 0  # the whole interval below zero
    assert "click/high" in [c.split(":")[0] for c in decision.as_dict()["cells_worse"]]
    assert "worst click/high" in decision.reason


def test_a_clearly_better_model_is_promoted():
    decision = compare(paired(new_noise=0.4), GateConfig())
    assert decision.promote and (decision.table["low"] > 0).all()  # ahead beyond the noise in every cell


def test_cells_with_too_few_positives_are_shown_but_not_judged():
    decision = compare(paired(high_tier_random=True, positives_high=20), GateConfig(min_positives=50))
    high = decision.table.set_index("group").loc["high"]
    assert not high["judged"] and high["positives"] == 20
    assert decision.promote  # the only cell that got worse had too few positives to judge
