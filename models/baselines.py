"""Baselines on the same inputs and outputs as TAMOR: shared-bottom, MMoE, PLE, and the
conventional practice of one MMoE per user tier.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tamor.models.base import MultiTaskModel, Towers
from tamor.models.config import ModelConfig
from tamor.models.feature_spec import FeatureSpec
from tamor.models.layers import CGC, PLE, mlp


class SharedBottom(MultiTaskModel):
    """One MLP over all inputs shared by every task, then a tower per task."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig):
        super().__init__(spec, config)
        self.bottom = mlp(self.joint_dim, config.expert_dims, config.dropout)
        self.towers = Towers({t: config.expert_dims[-1] for t in self.tasks}, config.tower_dims, config.dropout)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        h = self.bottom(self.joint_input(batch))
        return self.towers({t: h for t in self.tasks})

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"tier_agnostic": self.bottom(self.joint_input(batch))}


class GroupedExperts(MultiTaskModel):
    """Experts over all inputs gated per task (T groups), then a tower per task: ``[B, T, h]``."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig):
        super().__init__(spec, config)
        self.experts = self.build_experts(self.joint_dim)
        self.towers = Towers({t: config.expert_dims[-1] for t in self.tasks}, config.tower_dims, config.dropout)

    def build_experts(self, d_in: int) -> nn.Module:
        raise NotImplementedError

    def task_outputs(self, batch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = self.task_outputs(batch)
        return self.towers({t: out[:, i] for i, t in enumerate(self.tasks)})

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {"tier_agnostic": self.task_outputs(batch).mean(dim=1)}


class MMoE(GroupedExperts):
    """Multi-gate mixture of experts: ``num_experts`` shared experts, one gate per task."""

    def build_experts(self, d_in: int) -> nn.Module:
        return CGC(len(self.tasks), 0, self.config.num_experts, d_in, self.config.expert_dims, last=True)

    def task_outputs(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.experts(None, self.joint_input(batch))[0].transpose(0, 1)

    def gate_distributions(self) -> dict[str, Tensor]:
        return {name: g.mean(0) for name, g in self.experts.last_gates.items()}


class PLEModel(GroupedExperts):
    """Progressive layered extraction with one group per task (tier-agnostic)."""

    def build_experts(self, d_in: int) -> nn.Module:
        c = self.config
        return PLE(len(self.tasks), c.specific_experts, c.shared_experts, d_in, c.expert_dims, c.ple_levels)

    def task_outputs(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.experts(self.joint_input(batch))

    def gate_distributions(self) -> dict[str, Tensor]:
        return self.experts.gate_distributions()


class PerTierMMoE(MultiTaskModel):
    """The conventional practice: an independent MMoE (own embeddings too) per user tier, routed by tier."""

    def __init__(self, spec: FeatureSpec, config: ModelConfig):
        super().__init__(spec, config)
        del self.inputs  # each tier's MMoE has its own: no sharing across tiers
        self.per_tier = nn.ModuleList(MMoE(spec, config) for _ in spec.tiers)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        outs = [m(batch) for m in self.per_tier]  # every tier's model on the batch, then route
        pick = batch["tier"].unsqueeze(1)
        return {t: torch.stack([o[t] for o in outs], dim=1).gather(1, pick).squeeze(1) for t in self.tasks}

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        reps = torch.stack([m.representations(batch)["tier_agnostic"] for m in self.per_tier], dim=1)
        idx = batch["tier"].view(-1, 1, 1).expand(-1, 1, reps.shape[-1])
        return {"per_tier": reps.gather(1, idx).squeeze(1)}
