"""The synthetic world: deterministic, the mixes it was asked for, labels on the action chain."""

import numpy as np
import pandas as pd

from tamor.platform.world import CHAIN, SCENARIOS, WorldConfig, impressions, make_items, make_users, tier_of

CFG = WorldConfig(rows=40_000, n_users=4_000, n_items=120, seed=3, rows_per_block=40_000)


def test_same_seed_same_world_other_seed_other_world():
    a = impressions(CFG, 0, make_users(CFG), make_items(CFG))
    b = impressions(CFG, 0, make_users(CFG), make_items(CFG))
    pd.testing.assert_frame_equal(a, b)
    other = WorldConfig(**{**CFG.__dict__, "seed": 4})
    c = impressions(other, 0, make_users(other), make_items(other))
    assert not a["click"].equals(c["click"])


def test_tier_mix_and_holdings_agree():
    cfg = WorldConfig(n_users=20_000, tier_mix=(0.5, 0.3, 0.2), seed=1)
    users = make_users(cfg)
    mix = users["tier"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(mix, [0.5, 0.3, 0.2], atol=0.01)
    np.testing.assert_array_equal(tier_of(users["holdings"].to_numpy()), users["tier"].to_numpy())


def test_items_spread_evenly_over_six_scenarios():
    items = make_items(CFG)
    assert set(items["scenario"]) == set(SCENARIOS)
    assert items["scenario"].value_counts().nunique() == 1


def test_labels_follow_the_action_chain_and_tiers_differ():
    users = make_users(CFG)
    rows = impressions(CFG, 0, users, make_items(CFG))
    for earlier, later in zip(CHAIN, CHAIN[1:]):
        assert not ((rows[later] == 1) & (rows[earlier] == 0)).any(), f"{later} without {earlier}"
    tier = users.set_index("user_id").loc[rows["user_id"], "tier"].to_numpy()
    by_tier = rows.groupby(tier)[["invest", "large_invest", "high_holding"]].mean()
    assert by_tier["high_holding"].is_monotonic_increasing  # high-holding users hold more
    assert by_tier.loc[0, "large_invest"] < by_tier.loc[2, "large_invest"] / 5
    # tiers prefer different scenarios: the click rate's best scenario differs between new and high
    best = rows.groupby([tier, rows["scenario"]])["click"].mean().groupby(level=0).idxmax()
    assert best.loc[0][1] != best.loc[2][1]


def test_high_holding_is_one_draw_per_user_and_day():
    rows = impressions(CFG, 0, make_users(CFG), make_items(CFG))
    day = (rows["ts"] - CFG.start_ts) // 86_400
    assert rows.groupby([rows["user_id"], day])["high_holding"].nunique().max() == 1


def test_tier_heterogeneity_scales_how_differently_the_tiers_respond():
    from tamor.platform.world import ResponseModel

    def tier_spread(h: float) -> float:
        """How far the tiers' scenario responses are apart once each tier's own level is taken out."""
        click = ResponseModel(h).effects["click"]
        centred = click - click.mean(axis=1, keepdims=True)
        return float(np.abs(centred - centred.mean(axis=0)).max())

    assert tier_spread(0.0) < 1e-12  # one shared tier × scenario response: the tiers differ in base rate only
    assert abs(tier_spread(2.0) - 2 * tier_spread(1.0)) < 1e-12 and tier_spread(1.0) > 0.5
    np.testing.assert_allclose(ResponseModel(1.0).effects["invest"], ResponseModel().effects["invest"])
    shared = WorldConfig(**{**CFG.__dict__, "tier_heterogeneity": 0.0})
    rows = impressions(shared, 0, make_users(shared), make_items(shared))
    assert not rows["click"].equals(impressions(CFG, 0, make_users(CFG), make_items(CFG))["click"])  # the logs use it
