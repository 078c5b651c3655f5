"""The online feature store: the Redis backend (a real redis-server) returns what the embedded one does."""

import numpy as np
import pandas as pd

from tamor.platform.data_dir import DataDir
from tamor.serve.store import EmbeddedStore, RedisStore


def test_redis_and_embedded_stores_return_the_same_features(synthetic_data, redis_url):
    data = DataDir(synthetic_data)
    spec, encoder = data.spec(), data.encoder()
    embedded = EmbeddedStore(data, spec, encoder)
    redis_store = RedisStore(redis_url, spec, encoder, prefix="test")
    counts = redis_store.load(data)
    assert counts["users"] == len(embedded.tables["users"]) and counts["items"] == len(embedded.tables["items"])
    users = list(embedded.tables["users"].index[:50]) + ["nobody"]
    items = list(embedded.tables["items"].index[:20]) + ["no-such-card"]
    for kind, ids in (("users", users), ("items", items)):
        a, known_a = embedded.get(kind, ids)
        b, known_b = redis_store.get(kind, ids)
        np.testing.assert_array_equal(known_a, known_b)
        assert not known_a[-1] and known_a[:-1].all()
        pd.testing.assert_frame_equal(a.astype(float), b.astype(float))
    # the same candidates in the same order, each once, however the request spells its scenarios
    for scenarios in ([0, 2], [2, 0, 2], [1, 1], [], [99]):
        candidates = embedded.item_ids(scenarios)
        assert candidates == redis_store.item_ids(scenarios) and len(candidates) == len(set(candidates))
    assert embedded.item_ids([1, 1]) == embedded.item_ids([1]) != []
    assert redis_store.snapshot_id().startswith("redis:")


def test_unknown_ids_get_cold_start_rows(synthetic_data):
    data = DataDir(synthetic_data)
    spec, encoder = data.spec(), data.encoder()
    rows, known = EmbeddedStore(data, spec, encoder).get("users", ["nobody"])
    assert not known[0]
    # what the encoder makes of a user with no holdings and every feature missing: tier new, the
    # missing token's id where train had missing values (none in the synthetic world: OOV 0), mean numerics
    expected = encoder.encode({}, sides=["user"], n=1)
    assert rows.iloc[0]["tier"] == 0 and rows.iloc[0]["holdings"] == 0
    for column, value in expected.items():
        assert rows.iloc[0][column] == value[0]
