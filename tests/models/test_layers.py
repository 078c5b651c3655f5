"""Building blocks: batched experts equal a loop over experts; a CGC level equals its definition; tier encodings at the limits of τ."""

import torch

from tamor.models.layers import CGC, PLE, BatchedExperts, TierEncoding


def test_batched_experts_equal_a_loop_over_experts():
    torch.manual_seed(0)
    experts = BatchedExperts(num_experts=5, d_in=12, dims=[16, 8])
    loop = experts.loop_reference()
    x = torch.randn(32, 12)
    reference = torch.stack([e(x) for e in loop])
    torch.testing.assert_close(experts(x), reference)
    per_expert = torch.randn(5, 32, 12)  # one input per expert, as in PLE's later levels
    reference = torch.stack([e(per_expert[i]) for i, e in enumerate(loop)])
    torch.testing.assert_close(experts(per_expert), reference)
    assert experts(x).shape == (5, 32, 8)  # expert-major


def test_a_cgc_level_is_each_groups_softmax_gated_sum_of_its_own_and_the_shared_experts():
    torch.manual_seed(0)
    g, k, s, b = 3, 2, 2, 7
    layer = CGC(groups=g, specific=k, shared=s, d_in=10, dims=[8], last=False)
    with torch.no_grad():  # gates far from uniform, so a wrong pairing of weights and experts shows
        layer.gate_w.normal_(0, 1.0)
        layer.gate_b.normal_(0, 1.0)
    x_groups, x_shared = torch.randn(g, b, 10), torch.randn(b, 10)
    groups, shared = layer(x_groups, x_shared)
    loop = layer.experts.loop_reference()  # group i's experts are i*k .. i*k+k-1, the shared ones last
    shared_out = [loop[g * k + j](x_shared) for j in range(s)]  # [B, h] each
    for i in range(g):
        outs = [loop[i * k + j](x_groups[i]) for j in range(k)] + shared_out
        gates = torch.softmax(x_groups[i] @ layer.gate_w[i] + layer.gate_b[i], dim=-1)  # [B, k+s]
        torch.testing.assert_close(groups[i], sum(gates[:, [j]] * o for j, o in enumerate(outs)))
    all_outs = [loop[i * k + j](x_groups[i]) for i in range(g) for j in range(k)] + shared_out
    g_shared = torch.softmax(layer.shared_gate(x_shared), dim=-1)
    torch.testing.assert_close(shared, sum(g_shared[:, [e]] * o for e, o in enumerate(all_outs)))
    first, _ = layer(None, x_shared)  # a first level: every group reads the shared input
    torch.testing.assert_close(first, layer(x_shared.expand(g, -1, -1), x_shared)[0])


def test_soft_encoding_tends_to_one_hot_and_to_uniform():
    tier = torch.tensor([0, 1, 2, 2])
    cold = TierEncoding(3, 3, "soft", temperature=1e-4)
    torch.testing.assert_close(cold(tier), torch.nn.functional.one_hot(tier, 3).float())
    hot = TierEncoding(3, 3, "soft", temperature=1e6)
    torch.testing.assert_close(hot(tier), torch.full((4, 3), 1 / 3))
    assert TierEncoding(3, 3, "soft", temperature=1.0)(tier).argmax(1).tolist() == tier.tolist()


def test_cgc_and_ple_shapes_and_gates():
    layer = CGC(groups=3, specific=2, shared=1, d_in=10, dims=[8], last=False)
    groups, shared = layer(torch.randn(3, 4, 10), torch.randn(4, 10))  # group-major in and out
    assert groups.shape == (3, 4, 8) and shared.shape == (4, 8)
    assert layer.last_gates["groups"].shape == (4, 3, 3)  # 2 specific + 1 shared per group
    torch.testing.assert_close(layer.last_gates["groups"].sum(-1), torch.ones(4, 3))
    ple = PLE(groups=3, specific=1, shared=2, d_in=10, dims=[8, 6], levels=3)
    assert ple(torch.randn(4, 10)).shape == (4, 3, 6)
    assert set(ple.gate_distributions()) == {"level0/groups", "level0/shared", "level1/groups", "level1/shared", "level2/groups"}
