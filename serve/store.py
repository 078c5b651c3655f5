"""The online feature store: the latest encoded feature row per user and per item.

Two backends behind one interface: :class:`EmbeddedStore` (the preprocessing's ``online/`` Parquet
snapshot in memory, vectorised lookups) and :class:`RedisStore` (a real Redis server; one hash field
per id holding the row as JSON, fetched with one ``HMGET`` per lookup). Unknown ids get cold-start
rows — what the encoder makes of a row with every value missing, tier from zero holdings — and are
flagged, never an error.
"""

from __future__ import annotations

import json
import time
import uuid
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
    waits_on_io: bool  # a lookup waits on a server (run it in a thread), or is work in memory (run it inline)

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows for ``ids`` in order (``kind`` = users | items) and a bool mask of the known ones."""

    def item_ids(self, scenarios: list[int]) -> list[str]:
        """Every item id in the given scenario ids, once each, in id order (a repeated scenario adds nothing)."""

    def snapshot_id(self) -> str:
        """What snapshot the store serves (for ``GET /version``)."""


class EmbeddedStore:
    """The ``online/`` snapshot held in memory as DataFrames indexed by id."""

    waits_on_io = False

    def __init__(self, data: DataDir, spec: FeatureSpec, encoder: Encoder):
        self.spec, self.dir = spec, data.online()
        self.cold = {kind: cold_row(spec, encoder, kind) for kind in ONLINE_KINDS}
        self.tables = {}
        for kind in ONLINE_KINDS:
            key, cols = spec.online_columns(kind)
            self.tables[kind] = pd.read_parquet(data.online(kind)).set_index(key)[cols]
        self._index()

    def _index(self) -> None:
        """Per kind: id → row number and the rows as one float64 matrix with the cold row appended
        last, so a lookup is a dict lookup per id and one fancy index (a request's hot path)."""
        self._rows: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        for kind, table in self.tables.items():
            cold = np.array([[self.cold[kind][c] for c in table.columns]], dtype=np.float64)
            matrix = np.concatenate([table.to_numpy(dtype=np.float64), cold])
            self._rows[kind] = ({k: i for i, k in enumerate(table.index)}, matrix)

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        positions, matrix = self._rows[kind]
        cold = len(matrix) - 1
        rows = np.fromiter((positions.get(i, cold) for i in ids), dtype=np.int64, count=len(ids))
        return pd.DataFrame(matrix[rows], columns=self.tables[kind].columns), rows != cold

    def update(self, kind: str, ids: list[str], values: dict[str, np.ndarray]) -> None:
        """Set columns of these ids' rows (adding cold-start rows for new ids): a feature pipeline's write."""
        table = self.tables[kind]
        new = pd.Index(ids).difference(table.index)
        if len(new):
            table = pd.concat([table, pd.DataFrame([self.cold[kind]] * len(new), index=new)[table.columns]])
        for column, value in values.items():
            table.loc[ids, column] = value
        self.tables[kind] = table
        self._index()

    def item_ids(self, scenarios: list[int]) -> list[str]:
        items = self.tables["items"]
        return sorted(items.index[items["scenario"].isin(scenarios)])

    def snapshot_id(self) -> str:
        return f"embedded:{self.dir}"


class RedisStore:
    """Snapshots in Redis: ``{prefix}:snap:{id}:users`` / ``:items`` hashes (field = id, value = JSON row)
    and one pointer, ``{prefix}:snapshot``, naming the snapshot served.

    :meth:`load` writes a new snapshot beside the served one, checks its row counts, then switches the
    pointer in one ``GETSET`` and drops the old snapshot: readers see the old rows or the new, never a mix
    or a half-loaded hash. Each read resolves the pointer and fetches the rows in one Lua script, so a
    switch between the two cannot happen. Timeouts are bounded and a dropped connection is retried
    with backoff and re-opened on the next call: an outage raises :class:`StoreUnavailable` (serving
    answers 503) and serving resumes by itself when Redis is back. No snapshot (an empty or restarted
    Redis) is unavailable too.
    """

    waits_on_io = True

    # KEYS[1] = pointer; ARGV = prefix, kind, ids... → {snapshot id, [rows]} | false when no snapshot
    _READ = """
    local snap = redis.call('GET', KEYS[1])
    if not snap then return false end
    local key = ARGV[1] .. ':snap:' .. snap .. ':' .. ARGV[2]
    if #ARGV == 2 then return {snap, redis.call('HGETALL', key)} end
    return {snap, redis.call('HMGET', key, unpack(ARGV, 3))}
    """

    def __init__(self, url: str, spec: FeatureSpec, encoder: Encoder, prefix: str = "tamor", timeout_s: float = 0.5,
                 check: bool = True):
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.spec, self.url, self.prefix, self._redis = spec, url, prefix, redis
        self.cold = {kind: cold_row(spec, encoder, kind) for kind in ONLINE_KINDS}
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        self.pointer = f"{prefix}:snapshot"
        self._read = self.client.register_script(self._READ)
        self._items: tuple[str, dict[int, list[str]]] | None = None  # (snapshot, item ids by scenario)
        if check:
            self._call(self.client.ping)  # fail at start-up, not on the first request

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._redis.RedisError as e:
            raise StoreUnavailable(f"the Redis feature store at {self.url} does not answer ({e}); is redis-server running?") from None

    def _key(self, snapshot: str, kind: str) -> str:
        return f"{self.prefix}:snap:{snapshot}:{kind}"

    def _fetch(self, kind: str, ids: list[str]) -> tuple[str, list]:
        found = self._call(self._read, keys=[self.pointer], args=[self.prefix, kind, *ids])
        if not found:
            raise StoreUnavailable(f"the Redis feature store at {self.url} holds no snapshot: run `tamor features load`")
        return found[0].decode(), found[1]

    def load(self, data: DataDir, batch: int = 10_000) -> dict[str, int]:
        """Write ``data``'s ``online/`` snapshot beside the served one, check it, switch the pointer, drop the old."""
        snapshot = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        counts = {}
        try:
            for kind in ONLINE_KINDS:
                key, cols = self.spec.online_columns(kind)
                frame = pd.read_parquet(data.online(kind))
                records = frame[cols].to_dict(orient="records")
                for start in range(0, len(frame), batch):
                    chunk = {i: json.dumps(r) for i, r in zip(frame[key].iloc[start : start + batch], records[start : start + batch])}
                    self._call(self.client.hset, self._key(snapshot, kind), mapping=chunk)
                written = self._call(self.client.hlen, self._key(snapshot, kind))
                if written != frame[key].nunique():
                    raise StoreUnavailable(f"snapshot {snapshot}: {written} {kind} written of {frame[key].nunique()}; the served one is kept")
                counts[kind] = len(frame)
        except BaseException:
            self._drop(snapshot)
            raise
        old = self._call(self.client.getset, self.pointer, snapshot)  # the switch: one atomic SET
        self._call(self.client.set, f"{self.prefix}:snap:{snapshot}:source", str(data.online().resolve()))
        if old is not None:
            self._drop(old.decode())
        return counts

    def _drop(self, snapshot: str) -> None:
        self._call(self.client.delete, *(self._key(snapshot, k) for k in (*ONLINE_KINDS, "source")))

    def get(self, kind: str, ids: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        values = self._fetch(kind, ids)[1] if ids else []
        cold = self.cold[kind]
        known = np.array([v is not None for v in values], dtype=bool)
        rows = [json.loads(v) if v is not None else cold for v in values]
        return pd.DataFrame(rows, columns=self.spec.online_columns(kind)[1]), known

    def item_ids(self, scenarios: list[int]) -> list[str]:
        snapshot = self._call(self.client.get, self.pointer)
        if self._items is None or snapshot is None or self._items[0] != snapshot.decode():
            snap, flat = self._fetch("items", [])  # the whole items hash, once per snapshot
            by_scenario: dict[int, list[str]] = {}
            for k, v in zip(flat[::2], flat[1::2]):
                by_scenario.setdefault(json.loads(v)["scenario"], []).append(k.decode())
            self._items = (snap, by_scenario)
        return sorted({i for s in set(scenarios) for i in self._items[1].get(s, [])})

    def snapshot_id(self) -> str:
        snapshot = self._call(self.client.get, self.pointer)
        if snapshot is None:
            raise StoreUnavailable(f"the Redis feature store at {self.url} holds no snapshot: run `tamor features load`")
        return f"redis:{self.url}:{snapshot.decode()}"


def open_store(data: DataDir, redis_url: str | None = None, check: bool = True) -> FeatureStore:
    """The Redis store at ``redis_url``, else the data directory's embedded ``online/`` snapshot
    (``check=False``: do not require Redis to answer yet; a replica started during an outage serves 503s)."""
    spec, encoder = data.spec(), data.encoder()
    if redis_url:
        return RedisStore(redis_url, spec, encoder, check=check)
    return EmbeddedStore(data, spec, encoder)
