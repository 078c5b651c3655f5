"""The online feature store: the latest encoded feature row per user and per item.

Two backends behind one interface: :class:`EmbeddedStore` (the preprocessing's ``online/`` Parquet
snapshot in memory, vectorised lookups) and :class:`RedisStore` (a real Redis server; one hash field
per id holding the row as JSON, fetched with one ``HMGET`` per lookup). Unknown ids get cold-start
rows — what the encoder makes of a row with every value missing, tier from zero holdings — and are
flagged, never an error.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np
import pandas as pd

from tamor.models.encoder import Encoder
from tamor.models.errors import TamorError
from tamor.models.feature_spec import FeatureSpec
from tamor.platform.data_dir import ONLINE_KINDS, DataDir


class StoreUnavailable(TamorError):
    """The feature store cannot be reached."""


def cold_row(spec: FeatureSpec, encoder: Encoder, kind: str) -> dict[str, float]:
    """The encoded row of an unknown user (no holdings, every feature missing) or item (unknown scenario)."""
    side = "user" if kind == "users" else "item"
    row: dict[str, float] = {k: v[0].item() for k, v in encoder.encode({}, sides=[side], n=1).items()}
    if kind == "users":
        row.update(tier=int(encoder.tier_ids([None])[0]), holdings=0.0)
    else:
        row["scenario"] = 0
    return {c: row[c] for c in spec.online_columns(kind)[1]}


class FeatureStore(Protocol):
    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows for ``ids`` in order (``kind`` = users | items) and a bool mask of the known ones."""

    def item_ids(self, scenarios: list[int]) -> list[str]:
        """Every item id in the given scenario ids."""

    def snapshot_id(self) -> str:
        """What snapshot the store serves (for ``GET /version``)."""


class EmbeddedStore:
    """The ``online/`` snapshot held in memory as DataFrames indexed by id."""

    def __init__(self, data: DataDir, spec: FeatureSpec, encoder: Encoder):
        self.spec, self.dir = spec, data.online()
        self.cold = {kind: cold_row(spec, encoder, kind) for kind in ONLINE_KINDS}
        self.tables = {}
        for kind in ONLINE_KINDS:
            key, cols = spec.online_columns(kind)
            self.tables[kind] = pd.read_parquet(data.online(kind)).set_index(key)[cols]

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        table = self.tables[kind]
        rows = table.reindex(ids)  # one vectorised lookup; unknown ids become NaN rows
        known = rows.notna().all(axis=1).to_numpy()
        return rows.fillna(self.cold[kind]).reset_index(drop=True), known

    def update(self, kind: str, ids: list[str], values: dict[str, np.ndarray]) -> None:
        """Set columns of these ids' rows (adding cold-start rows for new ids): a feature pipeline's write."""
        table = self.tables[kind]
        new = pd.Index(ids).difference(table.index)
        if len(new):
            table = pd.concat([table, pd.DataFrame([self.cold[kind]] * len(new), index=new)[table.columns]])
        for column, value in values.items():
            table.loc[ids, column] = value
        self.tables[kind] = table

    def item_ids(self, scenarios: list[int]) -> list[str]:
        items = self.tables["items"]
        return items.index[items["scenario"].isin(scenarios)].tolist()

    def snapshot_id(self) -> str:
        return f"embedded:{self.dir}"


class RedisStore:
    """Rows in Redis hashes ``{prefix}:users`` and ``{prefix}:items`` (field = id, value = JSON row)."""

    def __init__(self, url: str, spec: FeatureSpec, encoder: Encoder, prefix: str = "tamor"):
        import redis

        self.spec, self.url, self.prefix = spec, url, prefix
        self.cold = {kind: cold_row(spec, encoder, kind) for kind in ONLINE_KINDS}
        self.client = redis.Redis.from_url(url)
        try:
            self.client.ping()  # fail at start-up, not on the first request
        except redis.RedisError as e:
            raise StoreUnavailable(f"the Redis feature store at {url} does not answer ({e}); is redis-server running?") from None

    def _key(self, kind: str) -> str:
        return f"{self.prefix}:{kind}"

    def load(self, data: DataDir, batch: int = 10_000) -> dict[str, int]:
        """Bulk-load an ``online/`` snapshot (pipelined ``HSET`` in batches); returns rows per kind."""
        counts = {}
        for kind in ONLINE_KINDS:
            key, cols = self.spec.online_columns(kind)
            frame = pd.read_parquet(data.online(kind))
            self.client.delete(self._key(kind))
            records = frame[cols].to_dict(orient="records")
            for start in range(0, len(frame), batch):
                chunk = {i: json.dumps(r) for i, r in zip(frame[key].iloc[start : start + batch], records[start : start + batch])}
                self.client.hset(self._key(kind), mapping=chunk)
            counts[kind] = len(frame)
        self.client.set(f"{self.prefix}:snapshot", str(data.online().resolve()))
        return counts

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        values = self.client.hmget(self._key(kind), ids) if ids else []
        cold = self.cold[kind]
        known = np.array([v is not None for v in values], dtype=bool)
        rows = [json.loads(v) if v is not None else cold for v in values]
        return pd.DataFrame(rows, columns=self.spec.online_columns(kind)[1]), known

    def item_ids(self, scenarios: list[int]) -> list[str]:
        wanted = set(scenarios)
        return [
            k.decode() for k, v in self.client.hscan_iter(self._key("items")) if json.loads(v)["scenario"] in wanted
        ]

    def snapshot_id(self) -> str:
        snap = self.client.get(f"{self.prefix}:snapshot")
        return f"redis:{self.url}:{snap.decode() if snap else '?'}"


def open_store(data: DataDir, redis_url: str | None = None) -> FeatureStore:
    """The Redis store at ``redis_url``, else the data directory's embedded ``online/`` snapshot."""
    spec, encoder = data.spec(), data.encoder()
    if redis_url:
        return RedisStore(redis_url, spec, encoder)
    return EmbeddedStore(data, spec, encoder)
