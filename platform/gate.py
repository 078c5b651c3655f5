"""The promotion gate: a new model replaces the one in production only if it is no worse for any user tier.

Both models' test metrics come from the same rows (see :func:`tamor.platform.evaluate.evaluate_on_test_rows`).
The gate compares them cell by cell — task × (overall, each tier) — and refuses the new model when any
cell with at least ``min_positives`` test positives lost more than ``tolerance`` AUC. Cells with fewer
positives are shown, never judged: their AUC moves by more than the tolerance from noise alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tamor.models.metrics import JUDGED_POSITIVES


class GateConfig(BaseModel):
    """When a new model may replace the current one (``alias``, default ``production``)."""

    model_config = ConfigDict(extra="forbid")
    alias: str = "production"
    tolerance: float = Field(0.002, ge=0, description="AUC a judged cell may lose")
    min_positives: int = Field(JUDGED_POSITIVES, ge=1, description="test positives a cell needs to be judged")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    table: pd.DataFrame  # task, slice, group, positives, auc_new, auc_current, delta, judged, worse

    def as_dict(self) -> dict:
        worse = self.table[self.table["worse"]]
        return {"promote": self.promote, "reason": self.reason, "cells_judged": int(self.table["judged"].sum()),
                "cells_worse": [f"{r.task}/{r.group}: {r.auc_current:.4f} → {r.auc_new:.4f}" for r in worse.itertuples()]}


def compare(new: pd.DataFrame, current: pd.DataFrame | None, cfg: GateConfig) -> GateDecision:
    """Decide from two metric tables of :func:`tamor.models.metrics.evaluate_predictions` (rows per task ×
    slice × group with ``auc`` and ``positives``); ``current`` None means nothing is in production yet."""
    cells = new[new["slice"].isin(["overall", "tier"])][["task", "slice", "group", "positives", "auc"]]
    if current is None:
        table = cells.rename(columns={"auc": "auc_new"}).assign(auc_current=np.nan, delta=np.nan, judged=False, worse=False)
        return GateDecision(True, f"nothing in {cfg.alias!r} yet: the first model is promoted", table.reset_index(drop=True))
    table = cells.rename(columns={"auc": "auc_new"}).merge(
        current[["task", "slice", "group", "auc"]].rename(columns={"auc": "auc_current"}), on=["task", "slice", "group"], how="left"
    )
    table["delta"] = table["auc_new"] - table["auc_current"]
    table["judged"] = (table["positives"] >= cfg.min_positives) & table["delta"].notna()
    table["worse"] = table["judged"] & (table["delta"] < -cfg.tolerance)
    n_worse, n_judged = int(table["worse"].sum()), int(table["judged"].sum())
    if n_judged == 0:
        return GateDecision(False, f"no cell has {cfg.min_positives}+ test positives: nothing to judge the new model by", table)
    if n_worse:
        worst = table[table["worse"]].sort_values("delta").iloc[0]
        return GateDecision(False, f"refused: {n_worse} of {n_judged} judged cells lost more than {cfg.tolerance} AUC "
                                   f"(worst {worst.task}/{worst.group} {worst.delta:+.4f})", table)
    return GateDecision(True, f"promoted: no judged cell ({n_judged}) lost more than {cfg.tolerance} AUC", table)
