"""Building blocks shared by every model: MLPs, batched experts, CGC/PLE, tier encodings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(d_in: int, dims: list[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """``[B, d_in] -> [B, dims[-1]]`` (identity when ``dims`` is empty)."""
    layers: list[nn.Module] = []
    for i, d in enumerate(dims):
        layers.append(nn.Linear(d_in, d))
        if i < len(dims) - 1 or last_activation:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
        d_in = d
    return nn.Sequential(*layers)


class BatchedExperts(nn.Module):
    """E expert MLPs run as batched matrix products: one weight tensor per layer for all experts.

    Input ``[B, d_in]`` (every expert sees the same input) or ``[B, E, d_in]`` (one input per expert);
    output ``[B, E, dims[-1]]``. Equivalent to a loop over E separate MLPs (see :meth:`loop_reference`),
    but one kernel per layer instead of E.
    """

    def __init__(self, num_experts: int, d_in: int, dims: list[int]):
        super().__init__()
        self.num_experts, self.dims = num_experts, list(dims)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_out in dims:
            w = torch.empty(num_experts, d_in, d_out)
            for e in range(num_experts):  # the same initialisation as nn.Linear, per expert
                nn.init.kaiming_uniform_(w[e].T, a=math.sqrt(5))
            bound = 1 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(num_experts, d_out).uniform_(-bound, bound)))
            d_in = d_out

    def forward(self, x: Tensor) -> Tensor:
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.einsum("bi,eio->beo", x, w) if (i == 0 and x.dim() == 2) else torch.einsum("bei,eio->beo", x, w)
            x = F.relu(x + b)
        return x

    def loop_reference(self) -> nn.ModuleList:
        """The same experts as a ``ModuleList`` of MLPs (the form other libraries loop over)."""
        experts = nn.ModuleList()
        for e in range(self.num_experts):
            net = mlp(self.weights[0].shape[1], self.dims)
            linears = [m for m in net if isinstance(m, nn.Linear)]
            with torch.no_grad():
                for lin, w, b in zip(linears, self.weights, self.biases):
                    lin.weight.copy_(w[e].T)
                    lin.bias.copy_(b[e])
            experts.append(net)
        return experts


class CGC(nn.Module):
    """One level of Customized Gate Control (PLE): G groups of specific experts plus shared experts.

    Inputs: ``x_groups [B, G, d_in]`` and ``x_shared [B, d_in]``. Outputs: ``[B, G, h]`` (each group's
    gated mix of its own and the shared experts) and, unless ``last``, ``[B, h]`` (the shared gate's mix
    of all experts, the next level's shared input). With ``specific = 0`` this is an MMoE layer.
    """

    def __init__(self, groups: int, specific: int, shared: int, d_in: int, dims: list[int], last: bool):
        super().__init__()
        self.groups, self.specific, self.shared, self.last = groups, specific, shared, last
        n_experts = groups * specific + shared
        self.experts = BatchedExperts(n_experts, d_in, dims)
        # expert e reads input slot expert_slot[e]: slot g < G is group g's input, slot G the shared one
        slot = [g for g in range(groups) for _ in range(specific)] + [groups] * shared
        self.register_buffer("expert_slot", torch.tensor(slot), persistent=False)
        shared_ids = list(range(groups * specific, n_experts))
        gate_ids = [list(range(g * specific, (g + 1) * specific)) + shared_ids for g in range(groups)]
        self.register_buffer("gate_experts", torch.tensor(gate_ids), persistent=False)  # [G, k+s]
        self.gate_w = nn.Parameter(torch.randn(groups, d_in, specific + shared) * 0.01)
        self.gate_b = nn.Parameter(torch.zeros(groups, specific + shared))
        self.shared_gate = None if last else nn.Linear(d_in, n_experts)
        self.last_gates: dict[str, Tensor] = {}

    def forward(self, x_groups: Tensor, x_shared: Tensor) -> tuple[Tensor, Tensor | None]:
        slots = torch.cat([x_groups, x_shared.unsqueeze(1)], dim=1)  # [B, G+1, d_in]
        out = self.experts(slots[:, self.expert_slot])  # [B, E, h]
        gates = torch.softmax(torch.einsum("bgi,gio->bgo", x_groups, self.gate_w) + self.gate_b, dim=-1)  # [B, G, k+s]
        groups = torch.einsum("bgk,bgkh->bgh", gates, out[:, self.gate_experts])  # [B, G, h]
        self.last_gates = {"groups": gates.detach()}
        shared = None
        if self.shared_gate is not None:
            g_shared = torch.softmax(self.shared_gate(x_shared), dim=-1)  # [B, E]
            shared = torch.einsum("be,beh->bh", g_shared, out)
            self.last_gates["shared"] = g_shared.detach()
        return groups, shared


class PLE(nn.Module):
    """Progressive Layered Extraction: ``levels`` CGC layers. ``[B, d_in] -> V [B, G, h]``."""

    def __init__(self, groups: int, specific: int, shared: int, d_in: int, dims: list[int], levels: int):
        super().__init__()
        self.levels = nn.ModuleList(
            CGC(groups, specific, shared, d_in if i == 0 else dims[-1], dims, last=i == levels - 1) for i in range(levels)
        )
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        x_groups, x_shared = x.unsqueeze(1).expand(-1, self.groups, -1), x
        for level in self.levels:
            x_groups, x_shared = level(x_groups, x_shared)
        return x_groups

    def gate_distributions(self) -> dict[str, Tensor]:
        """Mean gate weight per group and expert at each level, from the last forward: ``[G, k+s]``."""
        return {
            f"level{i}/{name}": g.mean(0) for i, level in enumerate(self.levels) for name, g in level.last_gates.items()
        }


class TierEncoding(nn.Module):
    """Weights over G groups for each row's tier (or scenario): ``tier [B] -> w [B, G]``.

    ``one_hot``: w = one_hot(tier). ``soft``: w = softmax(L[tier] / τ) with learnable logits
    ``L [num_tiers, G]`` initialised to ``init · one_hot``; τ → 0 gives one-hot, τ → ∞ uniform weights.
    """

    def __init__(self, num_tiers: int, groups: int, mode: str, temperature: float = 1.0, init: float = 3.0):
        super().__init__()
        if mode not in ("one_hot", "soft"):
            raise ValueError(f"encoding must be one_hot or soft, got {mode!r}")
        self.mode, self.groups = mode, groups
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.logits = nn.Parameter(init * torch.eye(num_tiers, groups)) if mode == "soft" else None

    def weights(self) -> Tensor:
        """The encoding of every tier: ``[num_tiers, G]``."""
        if self.logits is None:
            return torch.eye(self.groups, device=self.temperature.device)
        return torch.softmax(self.logits / self.temperature, dim=-1)

    def forward(self, tier: Tensor) -> Tensor:
        if self.logits is None:
            return F.one_hot(tier, self.groups).float()
        return torch.softmax(self.logits[tier] / self.temperature, dim=-1)
