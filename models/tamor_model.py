"""TAMOR: tier-aware user representation, scenario-aware item representation, user-bias learning.

::

    user inputs ─► PLE (g_u = #tiers groups) ─► V_u [B, g_u, h] ─► r_u = V_u · w_u(tier)      [B, h]
    item inputs ─► PLE (g_i = #scenarios)    ─► V_i [B, g_i, h] ─► r_i = V_i · w_i(scenario)  [B, h]
    user inputs ─► bias tower ─► b [B, bias_dim] ─► user-level task logits (high_holding)
    common towers (click, conversion):          [r_u, r_i, r_u ⊙ r_i, context]     ─► tier-aware logit
    user-specific towers (invest, large_invest): [r_u, r_i, r_u ⊙ r_i, context, b]  ─► tier-aware logit
    all inputs ─► shared experts, one gate per task ─► shared tower_t ─► shared logit   (the shared path: an
                                                    MMoE over every task, user-level ones included)
    logit_t = shared logit_t + tier-aware logit_t    (the user-level heads on b add to theirs likewise)

Three additions to the paper (docs/model.md and docs/decisions.md say why):

- the elementwise product r_u ⊙ r_i hands the towers the user × item interaction (a tier's taste for
  a scenario) that MMoE's experts get from seeing user and item features together;
- the shared path is an MMoE over every input and every task, and the tier- and scenario-aware towers
  (and the user-level heads on b) add a correction to its logit. Their last layers start at zero, so
  training starts from MMoE and the tier-aware part earns its place: where tiers do not behave
  differently, TAMOR falls back to MMoE. A user-level task reads user, item and context inputs through
  it, as every baseline does, while b stays item-agnostic. ``shared_path: false`` gives the paper's form;
- the tier-aware part decays more than the rest (``correction_decay``, AdamW's decoupled weight decay
  on its parameters), pulling it towards MMoE: it moves only as far as the train labels keep pushing
  it, so a small tier's few rows bend it less.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from tamor.models.base import MultiTaskModel, Towers
from tamor.models.config import ModelConfig
from tamor.models.feature_spec import FeatureSpec
from tamor.models.layers import CGC, PLE, TierEncoding, mlp


class TAMOR(MultiTaskModel):
    """The tier-aware multi-objective model (see the module docstring for its graph).

    Args:
        spec: the features, tiers, scenarios and tasks of the data (``FeatureSpec``, written by `tamor preprocess`).
        config: sizes and switches (``ModelConfig``): embedding and expert widths, τ, ``correction_decay``, ….

    Call args:
        batch: ``cat_<side>`` ``[B, C_side]`` int, ``num_<side>`` ``[B, N_side]`` float for side in user / item /
            context, ``tier`` and ``scenario`` ``[B]`` int (``models.inputs.batch_from_columns`` builds it).

    Returns:
        ``{task: logit [B]}``; ``predict_proba`` gives the probabilities ``[B, T]`` in the spec's task order.

    Example:
        >>> import numpy as np
        >>> from tamor.models.feature_spec import CategoricalField, NumericField, TaskSpec
        >>> from tamor.models.inputs import batch_from_columns
        >>> spec = FeatureSpec(dataset="demo", tiers=["new", "high"], tier_thresholds=[100.0], scenarios=["fund", "gold"],
        ...     categorical=[CategoricalField(name="item_id", side="item", vocab_size=10)],
        ...     numeric=[NumericField(name="age", side="user", mean=40, std=10)],
        ...     tasks=[TaskSpec(name="click", level="item", tiers=["new", "high"]),
        ...            TaskSpec(name="high_holding", level="user", tiers=["new", "high"])])
        >>> model = TAMOR(spec, ModelConfig(embedding_dim=4, expert_dims=[8], tower_dims=[4], bias_dim=4))
        >>> batch = batch_from_columns(spec, {"f_item_id": np.array([1, 7]), "f_age": np.array([0.3, -1.2]),
        ...                                   "tier": np.array([0, 1]), "scenario": np.array([0, 1])})
        >>> {task: tuple(logit.shape) for task, logit in model(batch).items()}
        {'click': (2,), 'high_holding': (2,)}
        >>> tuple(model.predict_proba(batch).shape)
        (2, 2)
    """

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
        self.shared = self.shared_towers = None
        if c.shared_path:  # MMoE over all inputs, one gate and tower per task (user-level ones too); the rest adds to it
            self.shared = CGC(len(self.tasks), 0, c.num_experts, self.joint_dim, c.expert_dims, last=True)
            self.shared_towers = Towers({t: h for t in self.tasks}, c.tower_dims, c.dropout)
            for head in [*(tower[-1] for tower in self.towers.towers.values()), self.user_level_heads]:
                nn.init.zeros_(head.weight)  # the tier-aware correction starts at zero: training starts from MMoE
                nn.init.zeros_(head.bias)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """With the shared path and ``correction_decay`` > 0, the tier- and scenario-aware part (everything but
        the inputs and the shared path) decays by it, at least by ``weight_decay``: pulled towards zero, i.e.
        towards MMoE, it moves only as far as the train labels keep pushing it, so a small tier's few rows
        bend it less."""
        if self.shared is None or self.config.correction_decay == 0:
            return super().parameter_groups(weight_decay)
        base = {id(p) for m in (self.inputs, self.shared, self.shared_towers) for p in m.parameters()}
        return [{"params": [p for p in self.parameters() if id(p) in base], "weight_decay": weight_decay},
                {"params": [p for p in self.parameters() if id(p) not in base],
                 "weight_decay": max(weight_decay, self.config.correction_decay)}]

    def _sides(self, batch: Mapping[str, Tensor], x: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``V_u [B, g_u, h]``, ``r_u [B, h]``, ``r_i [B, h]`` from the side inputs ``x`` (computed if not given)."""
        x = x or {s: self.inputs(batch, s) for s in ("user", "item")}
        v_user = self.user_ple(x["user"])
        r_user = (v_user * self.user_encoding(batch["tier"]).unsqueeze(-1)).sum(1)  # not einsum: a product per row
        v_item = self.item_ple(x["item"])
        r_item = (v_item * self.item_encoding(batch["scenario"]).unsqueeze(-1)).sum(1)
        return v_user, r_user, r_item

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        x = {s: self.inputs(batch, s) for s in ("user", "item", "context")}  # [B, d_side] each
        _, r_user, r_item = self._sides(batch, x)
        b = self.bias_tower(x["user"])  # item-agnostic: user inputs only
        common_in = torch.cat([r_user, r_item, r_user * r_item, x["context"]], dim=-1)  # [B, 3h + d_ctx]
        specific_in = torch.cat([common_in, b], dim=-1)
        out = self.towers({t: specific_in if t in self.user_specific else common_in for t in self.towers.towers})
        user_logits = self.user_level_heads(b)
        out.update({t: user_logits[:, i] for i, t in enumerate(self.user_level)})
        if self.shared is not None:
            joint = torch.cat([x["user"], x["item"], x["context"]], dim=-1)  # [B, d]
            shared = self.shared(None, joint)[0]  # [T, B, h]
            base = self.shared_towers({t: shared[i] for i, t in enumerate(self.tasks)})
            out = {t: base[t] + out[t] for t in self.tasks}
        return {t: out[t] for t in self.tasks}

    def user_bias(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The user-bias vector ``b [B, bias_dim]``."""
        return self.bias_tower(self.inputs(batch, "user"))

    def representations(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        v_user, r_user, _ = self._sides(batch)
        return {"tier_aware": r_user, "tier_agnostic": v_user.mean(dim=1)}

    def encoding_weights(self) -> dict[str, Tensor]:
        """Learned encodings: user ``[g_u, g_u]`` (tier → group weights) and item ``[g_i, g_i]``."""
        return {"user": self.user_encoding.weights().detach(), "item": self.item_encoding.weights().detach()}

    def gate_distributions(self) -> dict[str, Tensor]:
        gates = {f"user/{k}": v for k, v in self.user_ple.gate_distributions().items()}
        gates.update({f"item/{k}": v for k, v in self.item_ple.gate_distributions().items()})
        return gates
