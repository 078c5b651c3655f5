"""What a sweep searches and how: the base training config, the search space and the search. Ray-free, so the
CLI reads its defaults without importing Ray Tune.

Example:
    >>> cfg = SweepConfig(num_samples=4, lr=Range(low=2e-3, high=2e-3))
    >>> cfg.max_concurrent, cfg.lr.low == cfg.lr.high
    (2, True)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tamor.platform.defaults import DEFAULT_REGISTRY
from tamor.platform.tracking import WandbMode
from tamor.platform.train_config import TrainConfig


class Range(BaseModel):
    """A log-uniform range; ``low == high`` fixes the parameter at that value (searched no more)."""

    model_config = ConfigDict(extra="forbid")
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self


class SweepConfig(BaseModel):
    """A sweep: the base training config, the search space and the search itself."""

    model_config = ConfigDict(extra="forbid")
    train: TrainConfig = Field(default_factory=TrainConfig)
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    loss_weight: Range = Range(low=0.25, high=4.0)  # λ_t, log-uniform, one per task
    temperature: Range = Range(low=0.05, high=5.0)  # τ, log-uniform
    lr: Range = Range(low=1e-3, high=1e-2)
    correction_decay: Range | None = Field(
        None, description="TAMOR's correction_decay (log-uniform); None: not searched, the model config's value"
    )
    objective: Literal["mean_auc", "business"] = "mean_auc"
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial gets before it can be stopped")
    reduction_factor: int = Field(2, ge=2)
    trial_cpus: float = Field(0.1, gt=0, description="the trial function's own CPU (it only drives the trainer)")
    storage_path: str = "runs/tune"
    name: str | None = None
    registry: str | None = DEFAULT_REGISTRY
    wandb: WandbMode = "offline"
    wandb_group: str | None = None  # W&B group of the trials and the summary (default: the sweep's name)
    verbose: int = Field(1, ge=0, le=2, description="Tune's console output: 0 silent, 1 default, 2 every result")
    seed: int = 0
