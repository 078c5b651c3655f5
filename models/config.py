"""Typed model configuration, loadable from YAML or a dict; one config builds any model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_FILE = "model.pt"  # the model file in every checkpoint directory and registry version

ModelName = Literal["tamor", "shared_bottom", "mmoe", "ple", "per_tier_mmoe"]


class ModelConfig(BaseModel):
    """Hyperparameters of every model; each model reads the fields it needs."""

    model_config = ConfigDict(extra="forbid")
    name: ModelName = "tamor"
    embedding_dim: int = Field(8, ge=1)
    numeric_embedding: Literal["piecewise", "periodic", "linear"] = Field(
        "piecewise", description="numerics: a vector each (piecewise-linear over the encoder's bins, or periodic), or one projection"
    )
    expert_dims: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    num_experts: int = Field(4, ge=1, description="experts of MMoE and of the shared-bottom width")
    specific_experts: int = Field(1, ge=0, description="PLE: experts per group")
    shared_experts: int = Field(2, ge=1, description="PLE: experts shared by all groups")
    ple_levels: int = Field(2, ge=1)
    tower_dims: list[int] = Field(default_factory=lambda: [32])
    encoding: Literal["one_hot", "soft"] = "soft"
    temperature: float = Field(1.0, gt=0, description="τ of the soft tier encoding")
    soft_init: float = Field(3.0, description="soft encoding logits start at soft_init · one-hot")
    bias_dim: int = Field(16, ge=1, description="width of the user-bias vector b")
    shared_path: bool = Field(True, description="TAMOR: task-gated experts over all inputs beside the tier-aware path")
    correction_decay: float = Field(
        1.0, ge=0, description="TAMOR with the shared path: AdamW weight decay on the tier-aware part (towards MMoE); 0: as the rest"
    )
    user_specific_tasks: list[str] = Field(default_factory=lambda: ["invest", "large_invest"])
    dropout: float = Field(0.0, ge=0, lt=1)
    loss_weights: dict[str, float] = Field(default_factory=dict, description="λ_t; tasks not named get 1.0")
