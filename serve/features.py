"""What serving computes before the model, as plain functions (no Serve, no Ray, no torch).

The FeatureLookup deployment calls these, and so does the A/B simulator: one code path from a request
to the model's input columns (``MultiTaskModel.predict_columns`` takes them to probabilities). Raw request
values go through the data directory's :class:`Encoder`, the same one preprocessing encoded training with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tamor.models.encoder import Encoder
from tamor.models.feature_spec import FeatureSpec
from tamor.serve.store import FeatureStore


def lookup_columns(
    store: FeatureStore,
    encoder: Encoder,
    spec: FeatureSpec,
    user_ids: list[str],
    item_ids: list[str],
    context: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Model input columns for every (user, item) pair, users outer: ``[U·I]`` each.

    User and item rows come from the store (already encoded; cold-start rows for unknown ids), the
    request context is encoded here. Returns the columns and the known-masks ``[U]`` and ``[I]``.
    """
    users, users_known = store.get("users", list(user_ids))
    items, items_known = store.get("items", list(item_ids))
    n_u, n_i = len(users), len(items)
    cols = {c: np.repeat(users[c].to_numpy(), n_i) for c in users.columns}
    cols.update({c: np.tile(items[c].to_numpy(), n_u) for c in items.columns})
    cols.update({k: np.repeat(v, n_u * n_i) for k, v in encode_context(encoder, context).items()})
    numeric = {f"f_{f.name}" for f in spec.numeric}
    for c in cols:
        if c.startswith("f_"):  # store rows may come back as floats (JSON, NaN-filled reindex)
            cols[c] = cols[c].astype(np.float32 if c in numeric else np.int64)
    cols["tier"], cols["scenario"] = cols["tier"].astype(np.int64), cols["scenario"].astype(np.int64)
    return cols, users_known, items_known


def encode_context(encoder: Encoder, context: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A request's context encoded once (``[1]`` per context feature), cached: contexts repeat
    (a page, an hour, a position), and encoding through pandas costs more than the lookups."""
    try:
        key = (encoder.fingerprint, tuple(sorted((k, v) for k, v in context.items())))
        hash(key)
    except TypeError:  # an unhashable value: encode it uncached
        return encoder.encode(dict(context), sides=["context"], n=1)
    return _encoded_context(encoder, key)


_CONTEXTS: dict[tuple, dict[str, np.ndarray]] = {}


def _encoded_context(encoder: Encoder, key: tuple) -> dict[str, np.ndarray]:
    if key not in _CONTEXTS:
        if len(_CONTEXTS) >= 4096:  # bounded: drop everything rather than grow with odd contexts
            _CONTEXTS.clear()
        _CONTEXTS[key] = encoder.encode(dict(key[1]), sides=["context"], n=1)
    return _CONTEXTS[key]
