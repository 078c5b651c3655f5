"""The feature spec: everything a model, a server or another run needs to interpret preprocessed data.

Written by preprocessing as ``feature_spec.json``; read by models, training, tuning and serving.
It lives in ``models/`` because models are built from it, and ``models/`` imports no Ray.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_FILE = "feature_spec.json"
Side = Literal["user", "item", "context"]
SIDES: tuple[Side, ...] = ("user", "item", "context")


class CategoricalField(BaseModel):
    """A categorical column encoded as integer ids: 0 is out-of-vocabulary, 1..vocab_size-1 the vocabulary."""

    model_config = ConfigDict(extra="forbid")
    name: str
    side: Side
    vocab_size: int = Field(ge=1)


class NumericField(BaseModel):
    """A numeric column standardised as ``(f(x) - mean) / std`` with ``f`` = log1p or identity."""

    model_config = ConfigDict(extra="forbid")
    name: str
    side: Side
    mean: float
    std: float
    log1p: bool = False
    # bin edges in standardised units, ascending (for ``piecewise`` numeric embeddings): tree splits or train quantiles
    bins: list[float] | None = None


class TaskSpec(BaseModel):
    """One prediction task; ``level`` user tasks are item-agnostic; ``tiers`` are where it is an objective."""

    model_config = ConfigDict(extra="forbid")
    name: str
    level: Literal["item", "user"]
    tiers: list[str]
    present: bool = True


class FeatureSpec(BaseModel):
    """Columns of the preprocessed Parquet shards and their meaning.

    Column naming in the shards: feature ``x`` is column ``f_x`` (int64 ids or float32 values);
    ``tier`` and ``scenario`` are int64 ids; each task ``t`` has ``label_t`` (float32 0/1) and
    ``mask_t`` (float32, 1 where the label is known); ``user_id`` and ``item_id`` keep the raw ids.
    """

    model_config = ConfigDict(extra="forbid")
    dataset: str
    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str | None = "ts"
    categorical: list[CategoricalField]
    numeric: list[NumericField]
    tiers: list[str]
    tier_thresholds: list[float]
    holdings: str | None = None
    scenarios: list[str]
    tasks: list[TaskSpec]

    def categorical_on(self, side: Side) -> list[CategoricalField]:
        return [f for f in self.categorical if f.side == side]

    def numeric_on(self, side: Side) -> list[NumericField]:
        return [f for f in self.numeric if f.side == side]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def online_columns(self, kind: Literal["users", "items"]) -> tuple[str, list[str]]:
        """The feature store's key and encoded columns per user (tier, holdings, user features) or item."""
        if kind == "users":
            return self.user_id, ["tier", "holdings"] + [f"f_{f.name}" for f in self.categorical_on("user") + self.numeric_on("user")]
        return self.item_id, ["scenario"] + [f"f_{f.name}" for f in self.categorical_on("item") + self.numeric_on("item")]

    def task_tier_mask(self) -> list[list[float]]:
        """``[T][G_u]``: 1.0 where task t is an objective for tier g."""
        return [[1.0 if tier in t.tiers else 0.0 for tier in self.tiers] for t in self.tasks]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        return cls.model_validate(json.loads(path.read_text()))
