"""The online feature store: the latest encoded feature row per user and per item.

Two backends behind one interface: :class:`EmbeddedStore` (the preprocessing's ``online/`` Parquet
snapshot in memory, vectorised lookups) and :class:`RedisStore` (a real Redis server; one hash field
per id holding the row as JSON, fetched with one ``HMGET`` per lookup). Unknown ids get cold-start
rows — tier ``new`` (0), out-of-vocabulary categoricals (0), numerics at their mean (0) — and are
flagged, never an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from tamor.models.feature_spec import FeatureSpec


def entity_columns(spec: FeatureSpec, kind: str) -> list[str]:
    """Encoded columns stored per user (``tier``, ``holdings`` + user features) or per item."""
    side = "user" if kind == "users" else "item"
    head = ["tier", "holdings"] if kind == "users" else ["scenario"]
    return head + [f"f_{f.name}" for f in spec.categorical_on(side) + spec.numeric_on(side)]


def cold_row(spec: FeatureSpec, kind: str) -> dict[str, float]:
    return {c: 0 for c in entity_columns(spec, kind)}


class FeatureStore(Protocol):
    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows for ``ids`` in order (``kind`` = users | items) and a bool mask of the known ones."""

    def item_ids(self, scenarios: list[int]) -> list[str]:
        """Every item id in the given scenario ids."""

    def snapshot_id(self) -> str:
        """What snapshot the store serves (for ``GET /version``)."""


class EmbeddedStore:
    """The ``online/`` snapshot held in memory as DataFrames indexed by id."""

    def __init__(self, online_dir: str | Path, spec: FeatureSpec):
        self.spec, self.dir = spec, Path(online_dir)
        self.tables = {
            kind: pd.read_parquet(self.dir / kind).set_index(key)[entity_columns(spec, kind)]
            for kind, key in (("users", "user_id"), ("items", "item_id"))
        }

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        table = self.tables[kind]
        rows = table.reindex(ids)  # one vectorised lookup; unknown ids become NaN rows
        known = rows.notna().all(axis=1).to_numpy()
        return rows.fillna(0).reset_index(drop=True), known

    def item_ids(self, scenarios: list[int]) -> list[str]:
        items = self.tables["items"]
        return items.index[items["scenario"].isin(scenarios)].tolist()

    def snapshot_id(self) -> str:
        return f"embedded:{self.dir}"


class RedisStore:
    """Rows in Redis hashes ``{prefix}:users`` and ``{prefix}:items`` (field = id, value = JSON row)."""

    def __init__(self, url: str, spec: FeatureSpec, prefix: str = "tamor"):
        import redis

        self.spec, self.url, self.prefix = spec, url, prefix
        self.client = redis.Redis.from_url(url)
        self.client.ping()  # fail at start-up, not on the first request

    def _key(self, kind: str) -> str:
        return f"{self.prefix}:{kind}"

    def load(self, online_dir: str | Path, batch: int = 10_000) -> dict[str, int]:
        """Bulk-load an ``online/`` snapshot (pipelined ``HSET`` in batches); returns rows per kind."""
        counts = {}
        for kind, key in (("users", "user_id"), ("items", "item_id")):
            frame = pd.read_parquet(Path(online_dir) / kind)
            cols = entity_columns(self.spec, kind)
            self.client.delete(self._key(kind))
            records = frame[cols].to_dict(orient="records")
            for start in range(0, len(frame), batch):
                chunk = {i: json.dumps(r) for i, r in zip(frame[key].iloc[start : start + batch], records[start : start + batch])}
                self.client.hset(self._key(kind), mapping=chunk)
            counts[kind] = len(frame)
        self.client.set(f"{self.prefix}:snapshot", str(Path(online_dir).resolve()))
        return counts

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        values = self.client.hmget(self._key(kind), ids) if ids else []
        cold = cold_row(self.spec, kind)
        known = np.array([v is not None for v in values], dtype=bool)
        rows = [json.loads(v) if v is not None else cold for v in values]
        return pd.DataFrame(rows, columns=entity_columns(self.spec, kind)), known

    def item_ids(self, scenarios: list[int]) -> list[str]:
        wanted = set(scenarios)
        return [
            k.decode() for k, v in self.client.hscan_iter(self._key("items")) if json.loads(v)["scenario"] in wanted
        ]

    def snapshot_id(self) -> str:
        snap = self.client.get(f"{self.prefix}:snapshot")
        return f"redis:{self.url}:{snap.decode() if snap else '?'}"


def open_store(spec: FeatureSpec, online_dir: str | Path | None = None, redis_url: str | None = None) -> FeatureStore:
    if redis_url:
        return RedisStore(redis_url, spec)
    if online_dir is None:
        raise ValueError("an online/ snapshot directory or a Redis URL is needed")
    return EmbeddedStore(online_dir, spec)
