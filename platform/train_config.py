"""The training recipe: everything one run needs, typed, loadable from YAML and overridable from the CLI.

Ray-free, so the benchmarks and the step (:mod:`tamor.platform.step`) read the same defaults as `tamor train`.

Example:
    >>> cfg = TrainConfig(epochs=2, lr=3e-3)
    >>> cfg.batch_size, cfg.model.name
    (1024, 'tamor')
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tamor.models.config import ModelConfig
from tamor.platform.defaults import DEFAULT_DATA
from tamor.platform.tracking import DEFAULT_PROJECT, WandbMode


class TrainConfig(BaseModel):
    """Everything a training run needs; loadable from YAML, overridable from the CLI."""

    model_config = ConfigDict(extra="forbid")
    data_dir: str = DEFAULT_DATA
    model: ModelConfig = Field(default_factory=ModelConfig)
    # The recipe (docs/decisions.md): AdamW at 1e-3, batches of 1024, up to 30 epochs stopped after 3 without a
    # better validation metric, a fresh shuffle every epoch, targets mixed with the tree teacher's, the weights'
    # moving average validated and kept. bench/peers.py runs this same recipe through the same step (platform/step.py).
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    distill: float = Field(
        0.5, ge=0, le=1, description="α: train on (1 − α) · label + α · the out-of-fold tree teacher's probability "
        "(the train split's teacher_<task> columns, written by `tamor preprocess`); 0: the labels alone"
    )
    ema_decay: float = Field(
        0.99, ge=0, lt=1, description="an exponential moving average of the weights, updated every step (its decay "
        "warms up to this over the first ~1,000 steps), is what is validated, checkpointed and served; 0: the raw weights"
    )
    num_workers: int = Field(1, ge=1)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"] = Field(
        "PACK", description="where the workers go: STRICT_SPREAD puts each on its own node (a multi-node cluster)"
    )
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    cpus_per_worker: float = Field(0.5, gt=0, description="fractional, so Ray Data keeps a CPU on 2-CPU machines")
    torch_threads: int | None = Field(
        None, ge=1, description="intra-op threads per worker (Ray sets 1 for fractional CPUs; more can pay on CPU)"
    )
    shuffle_buffer: int = Field(100_000, ge=0, description="rows mixed by the per-epoch local shuffle (0: data order)")
    cache_data: Literal["auto", "always", "never"] = Field(
        "auto", description="materialise the train split in the object store (auto: when it fits in a quarter of it)"
    )
    storage_path: str = "runs/train"
    name: str | None = None  # None: a unique name (reusing a name resumes that run)
    metric: str = "val_auc_mean"
    mode: Literal["max", "min"] = "max"
    keep: int = Field(2, ge=1, description="best checkpoints kept")
    patience: int = Field(3, ge=1, description="epochs without improvement before early stopping")
    max_failures: int = Field(2, ge=0, description="worker failures recovered from the latest checkpoint")
    seed: int = 0
    wandb: WandbMode = "offline"
    wandb_project: str = DEFAULT_PROJECT
    wandb_group: str | None = Field(None, description="W&B group shared by the runs of one demo or job (default: the run name)")
    objective: dict[str, dict[str, float]] | None = Field(
        None,
        description="business objective: {tier: {task: weight}} over validation AUCs per tier; "
        "reported as val_objective (the mean AUC over tasks when unset)",
    )
