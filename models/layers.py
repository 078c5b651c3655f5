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

    Input ``[B, d_in]`` (every expert reads the same rows) or ``[E, B, d_in]`` (one input per expert); output
    ``[E, B, dims[-1]]``, expert-major: each expert's rows are contiguous, so a layer is one batched GEMM with
    its bias fused, and a gate mixes whole slices. Equal to a loop over E separate MLPs (:meth:`loop_reference`).

    >>> experts = BatchedExperts(num_experts=3, d_in=8, dims=[16, 4])
    >>> tuple(experts(torch.randn(5, 8)).shape)
    (3, 5, 4)
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
        x = x.expand(self.num_experts, -1, -1) if x.dim() == 2 else x  # a view: no copy of the shared rows
        for w, b in zip(self.weights, self.biases):
            x = F.relu(torch.baddbmm(b.unsqueeze(1), x, w), inplace=True)  # baddbmm's backward does not read its output
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

    Inputs, group-major: ``x_groups [G, B, d_in]`` (``None``: every group reads ``x_shared``, as at a first level
    or in MMoE) and ``x_shared [B, d_in]``. Outputs: ``[G, B, h]`` (each group's gated mix of its own and the
    shared experts) and, unless ``last``, ``[B, h]`` (the shared gate's mix of all experts, the next level's
    shared input). With ``specific = 0`` this is an MMoE layer. ``last_gates`` keeps the last gates batch-first.

    >>> layer = CGC(groups=2, specific=1, shared=2, d_in=8, dims=[6], last=False)
    >>> groups, shared = layer(None, torch.randn(5, 8))
    >>> tuple(groups.shape), tuple(shared.shape), tuple(layer.last_gates["groups"].shape)
    ((2, 5, 6), (5, 6), (5, 2, 3))
    """

    def __init__(self, groups: int, specific: int, shared: int, d_in: int, dims: list[int], last: bool):
        super().__init__()
        self.groups, self.specific, self.shared, self.last = groups, specific, shared, last
        n_experts = groups * specific + shared  # group g's specific experts first, in group order, then the shared
        self.experts = BatchedExperts(n_experts, d_in, dims)
        self.gate_w = nn.Parameter(torch.randn(groups, d_in, specific + shared) * 0.01)
        self.gate_b = nn.Parameter(torch.zeros(groups, specific + shared))
        self.shared_gate = None if last else nn.Linear(d_in, n_experts)
        self.last_gates: dict[str, Tensor] = {}

    def forward(self, x_groups: Tensor | None, x_shared: Tensor) -> tuple[Tensor, Tensor | None]:
        g, k = self.groups, self.specific
        gate_w = self.gate_w.transpose(1, 2)  # [G, k+s, d_in]
        if x_groups is None:
            out = self.experts(x_shared)  # [E, B, h]
            logits = torch.matmul(gate_w, x_shared.T)  # [G, k+s, B]
        else:
            shared_in = x_shared.expand(self.shared, -1, -1)
            out = self.experts(torch.cat([x_groups.repeat_interleave(k, dim=0), shared_in]))
            logits = torch.bmm(gate_w, x_groups.transpose(1, 2))
        # gates expert-by-row, [G, k+s, B]: the softmax runs along rows and each weight meets its expert's rows whole
        gates = torch.softmax(logits + self.gate_b.unsqueeze(-1), dim=1)
        mixed = _mix(gates[:, k:], out[g * k:].unsqueeze(0))
        if k:
            mixed = mixed + _mix(gates[:, :k], out[: g * k].unflatten(0, (g, k)))
        self.last_gates = {"groups": gates.detach().permute(2, 0, 1)}
        shared = None
        if self.shared_gate is not None:
            # the Linear's own weights, applied transposed: [E, B], as _mix reads gates
            g_shared = torch.softmax(torch.addmm(self.shared_gate.bias.unsqueeze(-1), self.shared_gate.weight, x_shared.T), dim=0)
            shared = _mix(g_shared.unsqueeze(0), out.unsqueeze(0)).squeeze(0)  # [B, h]
            self.last_gates["shared"] = g_shared.detach().T
        return mixed, shared


def _mix(weights: Tensor, experts: Tensor) -> Tensor:
    """``weights [G, n, B]`` · ``experts [G or 1, n, B, h]`` summed over the n experts: ``[G, B, h]``. Not einsum,
    which would make it B products of tiny matrices."""
    return (weights.unsqueeze(-1) * experts).sum(1)


class PLE(nn.Module):
    """Progressive Layered Extraction: ``levels`` CGC layers. ``[B, d_in] -> V [B, G, h]``.

    >>> tuple(PLE(groups=3, specific=1, shared=1, d_in=8, dims=[6], levels=2)(torch.randn(5, 8)).shape)
    (5, 3, 6)
    """

    def __init__(self, groups: int, specific: int, shared: int, d_in: int, dims: list[int], levels: int):
        super().__init__()
        self.levels = nn.ModuleList(
            CGC(groups, specific, shared, d_in if i == 0 else dims[-1], dims, last=i == levels - 1) for i in range(levels)
        )
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        x_groups, x_shared = None, x
        for level in self.levels:
            x_groups, x_shared = level(x_groups, x_shared)
        return x_groups.transpose(0, 1)

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
