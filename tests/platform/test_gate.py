"""The promotion gate: a new model is refused when any well-populated task × tier cell got worse."""

import pandas as pd

from tamor.platform.gate import GateConfig, compare


def metrics(aucs: dict[tuple[str, str], float], positives: dict[tuple[str, str], int] | None = None) -> pd.DataFrame:
    """A metrics table as `evaluate_predictions` writes it, from {(task, group): auc}."""
    rows = [{"task": task, "slice": "overall" if group == "all" else "tier", "group": group, "auc": auc,
             "positives": (positives or {}).get((task, group), 500)} for (task, group), auc in aucs.items()]
    return pd.DataFrame(rows + [{"task": "click", "slice": "scenario", "group": "fund", "auc": 0.1, "positives": 500}])


CURRENT = metrics({("click", "all"): 0.80, ("click", "new"): 0.78, ("click", "high"): 0.75})


def test_the_first_model_is_promoted_when_nothing_is_in_production():
    decision = compare(CURRENT, None, GateConfig())
    assert decision.promote and "nothing in 'production'" in decision.reason


def test_a_model_better_or_within_tolerance_everywhere_is_promoted():
    new = metrics({("click", "all"): 0.81, ("click", "new"): 0.779, ("click", "high"): 0.76})
    decision = compare(new, CURRENT, GateConfig(tolerance=0.002))
    assert decision.promote and decision.as_dict()["cells_judged"] == 3
    assert "scenario" not in set(decision.table["slice"])  # the gate judges users' tiers, not scenarios


def test_a_model_worse_for_one_tier_is_refused_even_if_better_overall():
    new = metrics({("click", "all"): 0.85, ("click", "new"): 0.80, ("click", "high"): 0.70})
    decision = compare(new, CURRENT, GateConfig(tolerance=0.002))
    assert not decision.promote
    assert decision.as_dict()["cells_worse"] == ["click/high: 0.7500 → 0.7000"]
    assert "worst click/high -0.0500" in decision.reason


def test_cells_with_too_few_positives_are_shown_but_not_judged():
    new = metrics({("click", "all"): 0.80, ("click", "new"): 0.78, ("click", "high"): 0.50}, {("click", "high"): 20})
    decision = compare(new, CURRENT, GateConfig(min_positives=50))
    assert decision.promote
    high = decision.table.set_index("group").loc["high"]
    assert not high["judged"] and high["delta"] < -0.2
