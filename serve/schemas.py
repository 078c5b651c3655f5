"""HTTP request and response models of the recommendation endpoint (pydantic, so bad bodies get a 4xx)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_CANDIDATES = 500
MAX_TOP_N = 100


class RecommendRequest(BaseModel):
    """One recommendation request: a user and exactly one of ``item_ids`` / ``scenarios`` (the schema's ``oneOf``).

    Example:
        >>> RecommendRequest(user_id="u1", scenarios=["fund"]).top_n
        10
    """

    # Exactly one candidate source, said in the OpenAPI schema too (a null is not an absent field: 422).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [{"required": ["item_ids"]}, {"required": ["scenarios"]}]})
    user_id: str = Field(min_length=1, max_length=128)
    item_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        None, min_length=1, max_length=MAX_CANDIDATES, description="candidate items, each once")  # type: ignore[assignment]
    scenarios: list[str] = Field(None, min_length=1, max_length=32, description="or: every item of these scenarios")  # type: ignore[assignment]
    top_n: int = Field(10, ge=1, le=MAX_TOP_N)
    context: dict[str, str | float] = Field(
        default_factory=dict, description="context features of the served model's data (their names: the schema's "
        "propertyNames enum), e.g. hour, page")

    @field_validator("item_ids")
    @classmethod
    def _unique(cls, ids: list[str]) -> list[str]:
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            twice = sorted({i for i in ids if i in seen or seen.add(i)})
            raise ValueError(f"duplicate item ids {twice[:5]}: list each candidate once")
        return ids

    @field_validator("context")
    @classmethod
    def _finite(cls, context: dict[str, str | float]) -> dict[str, str | float]:
        bad = [k for k, v in context.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"context {bad}: numbers must be finite")
        return context

    @model_validator(mode="after")
    def _one_candidate_source(self) -> RecommendRequest:
        if (self.item_ids is None) == (self.scenarios is None):
            raise ValueError("give exactly one of item_ids or scenarios")
        return self


class RankedItem(BaseModel):
    item_id: str
    scenario: str
    score: float
    probabilities: dict[str, float]
    reason: str
    cold_start: bool


class RecommendResponse(BaseModel):
    user_id: str
    tier: str
    cold_start_user: bool
    model_version: str
    items: list[RankedItem]
    unknown_items: list[str]


class Problem(BaseModel):
    """A 413 or 503 answer: what went wrong, in words."""

    detail: str
