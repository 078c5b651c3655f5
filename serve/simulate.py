"""`tamor simulate`: an online A/B test in the synthetic world.

Users of the world visit for D days; each day each arm's policy chooses the cards a visitor sees,
through the same feature lookup → rank → rerank functions as the serving deployments
(:func:`lookup_columns`, ``MultiTaskModel.predict_columns``, :func:`rerank`). The world's ground-truth
:class:`ResponseModel` draws the visitor's actions along the chain, investments raise holdings, and
each arm counts its **new high-holding users** per day (holdings crossing 100). Users are split
between the arms at random, seeded, so the result is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tamor.models.base import MultiTaskModel
from tamor.models.encoder import Encoder
from tamor.platform.world import (
    HIGH_HOLDING_THRESHOLD,
    ResponseModel,
    WorldConfig,
    make_items,
    make_users,
    response_inputs,
    tier_of,
)
from tamor.serve.features import lookup_columns
from tamor.serve.policy import RerankPolicy, rerank
from tamor.serve.store import EmbeddedStore

TASKS = ["click", "conversion", "invest", "large_invest", "high_holding"]

# A scorer gets the visitors (world rows, current tier) and the catalogue, returns [n_users, n_items, T].
Scorer = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class SimConfig:
    days: int = 7
    visit_rate: float = 0.3  # chance a user visits on a day
    slate: int = 3  # cards shown per visit
    seed: int = 0


def model_scorer(model: MultiTaskModel, store: EmbeddedStore, encoder: Encoder, context: dict | None = None) -> Scorer:
    """Score as serving does (:func:`lookup_columns` → ``MultiTaskModel.predict_columns``): the visitors' holdings and
    tiers of today are first written to the store, as a feature pipeline would."""
    spec = model.spec

    def score(visitors: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
        user_ids = visitors["user_id"].tolist()
        holdings = visitors["holdings"].to_numpy(dtype=float)
        store.update("users", user_ids, {"holdings": holdings, "tier": encoder.tier_of(holdings)})
        cols, _, _ = lookup_columns(store, encoder, spec, user_ids, items["item_id"].tolist(), context or {})
        return model.predict_columns(cols).reshape(len(visitors), len(items), len(spec.tasks))

    return score


def oracle_scorer(world: WorldConfig) -> Scorer:
    """The ground truth itself (uses the hidden capacity and quality): an upper bound."""
    truth = ResponseModel(world.tier_heterogeneity)

    def score(visitors: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
        n_u, n_i = len(visitors), len(items)
        u = visitors.loc[visitors.index.repeat(n_i)]
        it = items.iloc[np.tile(np.arange(n_i), n_u)]
        p = truth.chain_probabilities(**response_inputs(u, it, np.zeros(len(u))))
        hh = truth.high_holding_probability(u["tier"].to_numpy(), u["capacity"].to_numpy())
        return np.stack([p[t] for t in TASKS[:4]] + [hh], axis=1).reshape(n_u, n_i, len(TASKS))

    return score


def random_scorer(seed: int) -> Scorer:
    rng = np.random.default_rng(seed)
    return lambda visitors, items: rng.uniform(size=(len(visitors), len(items), len(TASKS)))


def simulate(world: WorldConfig, arms: dict[str, Scorer], cfg: SimConfig, policy: RerankPolicy | None = None) -> pd.DataFrame:
    """Run the A/B test; one row per (day, arm): visitors, investments, new high-holding users."""
    policy = policy or RerankPolicy()
    users, items = make_users(world), make_items(world)
    rng = np.random.default_rng([cfg.seed, 99])
    arm_names = list(arms)
    users["arm"] = rng.integers(0, len(arm_names), size=len(users))
    truth = ResponseModel(world.tier_heterogeneity)
    tiers = ["new", "low", "high"]
    rows = []
    for day in range(cfg.days):
        visiting = rng.uniform(size=len(users)) < cfg.visit_rate
        for a, name in enumerate(arm_names):
            visitors = users[visiting & (users["arm"].to_numpy() == a)]
            if visitors.empty:
                rows.append({"day": day, "arm": name, "visitors": 0, "invests": 0, "new_high_holding": 0})
                continue
            probs = arms[name](visitors, items)  # [n_u, n_i, T]
            position_of = {item_id: i for i, item_id in enumerate(items["item_id"])}
            shown_u, shown_i, position = [], [], []
            for k, (idx, user) in enumerate(visitors.iterrows()):
                ranked = rerank(policy, tiers[int(user["tier"])], TASKS, items["item_id"].tolist(), items["scenario"].tolist(), probs[k], cfg.slate)
                picks = [position_of[r["item_id"]] for r in ranked]
                shown_u += [idx] * len(picks)
                shown_i += list(picks)
                position += list(range(len(picks)))
            u, it = users.loc[shown_u], items.iloc[shown_i]
            acts = truth.sample(rng, **response_inputs(u, it, position))
            # an investment adds to holdings; a large one is over 100 (the paper's definition)
            amount = np.where(acts["large_invest"] == 1, 100.0 + rng.exponential(200.0, len(u)),
                              np.where(acts["invest"] == 1, rng.uniform(1.0, 99.0, len(u)), 0.0))
            before = users.loc[visitors.index, "holdings"].to_numpy() >= HIGH_HOLDING_THRESHOLD
            gains = pd.Series(amount, index=shown_u).groupby(level=0).sum()
            users.loc[gains.index, "holdings"] += gains.to_numpy()
            users.loc[gains.index, "tier"] = tier_of(users.loc[gains.index, "holdings"].to_numpy())
            after = users.loc[visitors.index, "holdings"].to_numpy() >= HIGH_HOLDING_THRESHOLD
            rows.append({"day": day, "arm": name, "visitors": len(visitors), "invests": int(acts["invest"].sum()),
                         "new_high_holding": int((after & ~before).sum())})
    return pd.DataFrame(rows)


def lift_with_ci(daily: pd.DataFrame, treatment: str, control: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Relative lift in new high-holding users per visitor, treatment over control, with a 95% CI
    from a bootstrap over days."""
    pivot = daily.pivot(index="day", columns="arm", values=["new_high_holding", "visitors"])
    t_new, c_new = pivot["new_high_holding"][treatment].to_numpy(), pivot["new_high_holding"][control].to_numpy()
    t_vis, c_vis = pivot["visitors"][treatment].to_numpy(), pivot["visitors"][control].to_numpy()

    def lift(idx: np.ndarray) -> float:
        c = c_new[idx].sum() / max(c_vis[idx].sum(), 1)
        return (t_new[idx].sum() / max(t_vis[idx].sum(), 1)) / c - 1.0 if c > 0 else float("nan")

    rng = np.random.default_rng(seed)
    days = np.arange(len(pivot))
    boots = np.array([lift(rng.choice(days, len(days))) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    return {
        "treatment": treatment,
        "control": control,
        "new_high_holding": {treatment: int(t_new.sum()), control: int(c_new.sum())},
        "visitors": {treatment: int(t_vis.sum()), control: int(c_vis.sum())},
        "lift": lift(days),
        "ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) else [float("nan")] * 2,
    }

