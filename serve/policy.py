"""The rerank policy: one score per candidate from its five probabilities, weighted per user tier,
with eligibility filters and a cap on items per scenario in the top N. Pure NumPy (no Serve), so
it is tested and reused (by the A/B simulator) on its own.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tamor.platform.objectives import copy_weights


class RerankPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, dict[str, float]] = Field(default_factory=copy_weights)
    scenario_cap: int = Field(3, ge=1, description="at most this many items of one scenario in the top N")
    exclude: dict[str, list[str]] = Field(default_factory=dict, description="tier -> scenarios never shown to it")

    def weight_vector(self, tier: str, tasks: list[str]) -> np.ndarray:
        """``[T]`` weights for a tier (uniform over tasks when the tier has none configured)."""
        w = self.weights.get(tier)
        if not w:
            return np.full(len(tasks), 1.0 / len(tasks))
        return np.array([w.get(t, 0.0) for t in tasks])


def rerank(
    policy: RerankPolicy,
    tier: str,
    tasks: list[str],
    item_ids: list[str],
    scenarios: list[str],
    probs: np.ndarray,
    top_n: int,
) -> list[dict]:
    """Ranked items: ``probs`` is ``[n, T]`` for ``n`` candidates; returns at most ``top_n`` dicts."""
    w = policy.weight_vector(tier, tasks)
    contrib = probs * w  # [n, T]
    score = contrib.sum(axis=1)
    excluded = set(policy.exclude.get(tier, []))
    per_scenario: dict[str, int] = {}
    ranked = []
    for i in np.argsort(-score, kind="stable"):
        scen = scenarios[i]
        if scen in excluded or per_scenario.get(scen, 0) >= policy.scenario_cap:
            continue
        per_scenario[scen] = per_scenario.get(scen, 0) + 1
        lead = tasks[int(np.argmax(contrib[i]))]
        ranked.append(
            {
                "item_id": item_ids[i],
                "scenario": scen,
                "score": float(score[i]),
                "probabilities": {t: float(p) for t, p in zip(tasks, probs[i])},
                "reason": f"{tier} tier: weighted {'+'.join(t for t, x in zip(tasks, w) if x)}; led by {lead} "
                f"({contrib[i].max():.3f} of {score[i]:.3f})",
            }
        )
        if len(ranked) == top_n:
            break
    return ranked
