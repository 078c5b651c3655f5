"""What the business wants from each user tier, named once.

One table of per-tier task weights serves two purposes on purpose: the reranker scores candidates
as Σ_t w[tier][t] · p_t (``serve/policy.py``), and the sweep's ``business`` objective selects models by
Σ w[tier][t] · AUC(t, tier) / Σ w (``platform/step.py: objective_value``). A model is tuned for the
same trade-off it is served with.
"""

from __future__ import annotations

TIER_TASK_WEIGHTS: dict[str, dict[str, float]] = {
    # new users: activity along the chain
    "new": {"click": 0.3, "conversion": 0.3, "invest": 0.4},
    # low-position users: a large investment that lifts them over the threshold
    "low": {"large_invest": 0.5, "high_holding": 0.3, "invest": 0.2},
    "high": {"invest": 0.4, "large_invest": 0.4, "click": 0.2},
}


def copy_weights() -> dict[str, dict[str, float]]:
    """A fresh, mutable copy of :data:`TIER_TASK_WEIGHTS`."""
    return {tier: dict(w) for tier, w in TIER_TASK_WEIGHTS.items()}
