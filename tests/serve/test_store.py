"""The online feature store: the Redis backend (a real redis-server) returns what the embedded one does."""

import numpy as np
import pandas as pd

from tamor.models.feature_spec import FeatureSpec
from tamor.serve.store import EmbeddedStore, RedisStore


def test_redis_and_embedded_stores_return_the_same_features(synthetic_data, redis_url):
    spec = FeatureSpec.load(synthetic_data)
    embedded = EmbeddedStore(synthetic_data / "online", spec)
    redis_store = RedisStore(redis_url, spec, prefix="test")
    counts = redis_store.load(synthetic_data / "online")
    assert counts["users"] == len(embedded.tables["users"]) and counts["items"] == len(embedded.tables["items"])
    users = list(embedded.tables["users"].index[:50]) + ["nobody"]
    items = list(embedded.tables["items"].index[:20]) + ["no-such-card"]
    for kind, ids in (("users", users), ("items", items)):
        a, known_a = embedded.get(kind, ids)
        b, known_b = redis_store.get(kind, ids)
        np.testing.assert_array_equal(known_a, known_b)
        assert not known_a[-1] and known_a[:-1].all()
        pd.testing.assert_frame_equal(a.astype(float), b.astype(float))
    assert sorted(embedded.item_ids([0, 2])) == sorted(redis_store.item_ids([0, 2]))
    assert redis_store.snapshot_id().startswith("redis:")


def test_unknown_ids_get_cold_start_rows(synthetic_data):
    spec = FeatureSpec.load(synthetic_data)
    rows, known = EmbeddedStore(synthetic_data / "online", spec).get("users", ["nobody"])
    assert not known[0]
    assert rows.iloc[0]["tier"] == 0 and (rows.iloc[0] == 0).all()  # new tier, OOV ids, mean numerics
