"""HTTP request and response models of the recommendation endpoint (pydantic, so bad bodies get a 4xx)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_CANDIDATES = 500
MAX_TOP_N = 100


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=128)
    item_ids: list[str] | None = Field(None, min_length=1, max_length=MAX_CANDIDATES, description="candidate items")
    scenarios: list[str] | None = Field(None, min_length=1, max_length=32, description="or: every item of these scenarios")
    top_n: int = Field(10, ge=1, le=MAX_TOP_N)
    context: dict[str, str | float] = Field(default_factory=dict, description="context features, e.g. hour, page")

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
