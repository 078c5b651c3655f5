"""Building blocks: batched experts equal a loop over experts; tier encodings at the limits of τ."""

import torch

from tamor.models.layers import CGC, PLE, BatchedExperts, TierEncoding


def test_batched_experts_equal_a_loop_over_experts():
    torch.manual_seed(0)
    experts = BatchedExperts(num_experts=5, d_in=12, dims=[16, 8])
    loop = experts.loop_reference()
    x = torch.randn(32, 12)
    reference = torch.stack([e(x) for e in loop], dim=1)
    torch.testing.assert_close(experts(x), reference)
    per_expert = torch.randn(32, 5, 12)  # one input per expert, as in PLE's later levels
    reference = torch.stack([e(per_expert[:, i]) for i, e in enumerate(loop)], dim=1)
    torch.testing.assert_close(experts(per_expert), reference)
    assert experts(x).shape == (32, 5, 8)


def test_soft_encoding_tends_to_one_hot_and_to_uniform():
    tier = torch.tensor([0, 1, 2, 2])
    cold = TierEncoding(3, 3, "soft", temperature=1e-4)
    torch.testing.assert_close(cold(tier), torch.nn.functional.one_hot(tier, 3).float())
    hot = TierEncoding(3, 3, "soft", temperature=1e6)
    torch.testing.assert_close(hot(tier), torch.full((4, 3), 1 / 3))
    assert TierEncoding(3, 3, "soft", temperature=1.0)(tier).argmax(1).tolist() == tier.tolist()


def test_cgc_and_ple_shapes_and_gates():
    layer = CGC(groups=3, specific=2, shared=1, d_in=10, dims=[8], last=False)
    groups, shared = layer(torch.randn(4, 3, 10), torch.randn(4, 10))
    assert groups.shape == (4, 3, 8) and shared.shape == (4, 8)
    assert layer.last_gates["groups"].shape == (4, 3, 3)  # 2 specific + 1 shared per group
    torch.testing.assert_close(layer.last_gates["groups"].sum(-1), torch.ones(4, 3))
    ple = PLE(groups=3, specific=1, shared=2, d_in=10, dims=[8, 6], levels=3)
    assert ple(torch.randn(4, 10)).shape == (4, 3, 6)
    assert set(ple.gate_distributions()) == {"level0/groups", "level0/shared", "level1/groups", "level1/shared", "level2/groups"}
