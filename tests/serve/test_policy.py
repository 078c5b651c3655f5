"""The rerank policy on its own: per-tier weights, scenario cap, eligibility."""

import numpy as np

from tamor.serve.policy import RerankPolicy, rerank

TASKS = ["click", "conversion", "invest", "large_invest", "high_holding"]
# three candidates: A is click-heavy, B large-invest-heavy, C in between
PROBS = np.array([[0.9, 0.5, 0.3, 0.01, 0.1], [0.2, 0.1, 0.1, 0.20, 0.6], [0.5, 0.3, 0.2, 0.05, 0.3]])
ITEMS, SCENARIOS = ["A", "B", "C"], ["money_market", "fund", "gold"]


def order(policy, tier, top_n=3, scenarios=SCENARIOS):
    return [r["item_id"] for r in rerank(policy, tier, TASKS, ITEMS, scenarios, PROBS, top_n)]


def test_per_tier_weights_change_the_order():
    policy = RerankPolicy()
    assert order(policy, "new")[0] == "A"  # new users: click / conversion / invest
    assert order(policy, "low")[0] == "B"  # low-position users: large_invest / high_holding
    flipped = RerankPolicy(weights={"new": {"large_invest": 1.0}})
    assert order(flipped, "new")[0] == "B"


def test_scores_are_the_weighted_probabilities_and_carry_a_reason():
    policy = RerankPolicy(weights={"new": {"click": 1.0, "invest": 1.0}})
    top = rerank(policy, "new", TASKS, ITEMS, SCENARIOS, PROBS, 1)[0]
    assert top["score"] == PROBS[0, 0] + PROBS[0, 2]
    assert "led by click" in top["reason"] and top["probabilities"]["click"] == 0.9


def test_scenario_cap_holds_in_the_top_n():
    policy = RerankPolicy(scenario_cap=1)
    ranked = order(policy, "new", scenarios=["fund", "fund", "gold"])
    assert ranked == ["A", "C"]  # the second fund card is capped out


def test_excluded_scenarios_are_never_shown_to_that_tier():
    policy = RerankPolicy(exclude={"new": ["money_market"]})
    assert "A" not in order(policy, "new") and "A" in order(policy, "high")
