"""TAMOR: tier-aware user representation, scenario-aware item representation, user-bias learning.

::

    user inputs ─► PLE (g_u = #tiers groups) ─► V_u [B, g_u, h] ─► r_u = V_u · w_u(tier)      [B, h]
    item inputs ─► PLE (g_i = #scenarios)    ─► V_i [B, g_i, h] ─► r_i = V_i · w_i(scenario)  [B, h]
    user inputs ─► bias tower ─► b [B, bias_dim] ─► user-level task logits (high_holding)
    common towers (click, conversion):          [r_u, r_i, r_u ⊙ r_i, context]
    user-specific towers (invest, large_invest): [r_u, r_i, r_u ⊙ r_i, context, b]

The elementwise product r_u ⊙ r_i is our addition to the paper's tower inputs: it hands the towers
the user × item interaction (e.g. a tier's taste for a scenario) that MMoE's experts get from seeing
user and item features together, instead of leaving one small tower layer to discover it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tamor.models.base import MultiTaskModel, Towers
from tamor.models.config import ModelConfig
from tamor.models.feature_spec import FeatureSpec
from tamor.models.layers import PLE, TierEncoding, mlp


class TAMOR(MultiTaskModel):
    def __init__(self, spec: FeatureSpec, config: ModelConfig):
        super().__init__(spec, config)
        c, h = config, config.expert_dims[-1]
        g_u, g_i = len(spec.tiers), len(spec.scenarios)
        self.user_ple = PLE(g_u, c.specific_experts, c.shared_experts, self.inputs.dims["user"], c.expert_dims, c.ple_levels)
        self.item_ple = PLE(g_i, c.specific_experts, c.shared_experts, self.inputs.dims["item"], c.expert_dims, c.ple_levels)
        self.user_encoding = TierEncoding(g_u, g_u, c.encoding, c.temperature, c.soft_init)
        self.item_encoding = TierEncoding(g_i, g_i, c.encoding, c.temperature, c.soft_init)
        # Which task is user-level, user-specific or common comes from the spec and the config.
        self.user_level = [t.name for t in spec.tasks if t.level == "user"]
        self.user_specific = [t for t in self.tasks if t in c.user_specific_tasks and t not in self.user_level]
        self.common = [t for t in self.tasks if t not in self.user_level and t not in self.user_specific]
        self.bias_tower = mlp(self.inputs.dims["user"], [*c.tower_dims, c.bias_dim], c.dropout)
        self.user_level_heads = nn.Linear(c.bias_dim, max(1, len(self.user_level)))
        d_common = 3 * h + self.inputs.dims["context"]
        self.towers = Towers(
            {t: d_common + (c.bias_dim if t in self.user_specific else 0) for t in self.common + self.user_specific},
            c.tower_dims,
            c.dropout,
        )

    def _sides(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``V_u [B, g_u, h]``, ``r_u [B, h]``, ``r_i [B, h]``, user inputs ``[B, d_u]``."""
        x_user = self.inputs(batch, "user")
        v_user = self.user_ple(x_user)
        r_user = torch.einsum("bgh,bg->bh", v_user, self.user_encoding(batch["tier"]))
        v_item = self.item_ple(self.inputs(batch, "item"))
        r_item = torch.einsum("bgh,bg->bh", v_item, self.item_encoding(batch["scenario"]))
        return v_user, r_user, r_item, x_user

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        _, r_user, r_item, x_user = self._sides(batch)
        b = self.bias_tower(x_user)  # item-agnostic: user inputs only
        common_in = torch.cat([r_user, r_item, r_user * r_item, self.inputs(batch, "context")], dim=-1)
        specific_in = torch.cat([common_in, b], dim=-1)
        out = self.towers({t: specific_in if t in self.user_specific else common_in for t in self.towers.towers})
        user_logits = self.user_level_heads(b)
        out.update({t: user_logits[:, i] for i, t in enumerate(self.user_level)})
        return {t: out[t] for t in self.tasks}

    def user_bias(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The user-bias vector ``b [B, bias_dim]``."""
        return self.bias_tower(self.inputs(batch, "user"))

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        v_user, r_user, _, _ = self._sides(batch)
        return {"tier_aware": r_user, "tier_agnostic": v_user.mean(dim=1)}

    def encoding_weights(self) -> dict[str, Tensor]:
        """Learned encodings: user ``[g_u, g_u]`` (tier → group weights) and item ``[g_i, g_i]``."""
        return {"user": self.user_encoding.weights().detach(), "item": self.item_encoding.weights().detach()}

    def gate_distributions(self) -> dict[str, Tensor]:
        gates = {f"user/{k}": v for k, v in self.user_ple.gate_distributions().items()}
        gates.update({f"item/{k}": v for k, v in self.item_ple.gate_distributions().items()})
        return gates
