"""Numeric embeddings: piecewise-linear shares of quantile bins, and every model built on them."""

import torch

from tamor.models.config import ModelConfig
from tamor.models.factory import build_model
from tamor.models.inputs import PiecewiseLinearEmbedding


def test_piecewise_shares_fill_bins_in_order_and_the_outer_bins_stay_open():
    layer = PiecewiseLinearEmbedding([[0.0, 1.0, 2.0, 4.0], [-1.0, 1.0]], dim=3)
    x = torch.tensor([[-1.0, 0.0], [1.5, 3.0], [6.0, -5.0]])
    expected = torch.tensor([
        [[-1.0, 0.0, 0.0], [0.5, 0.0, 0.0]],  # below the first edge: the first bin goes negative
        [[1.0, 0.5, 0.0], [2.0, 0.0, 0.0]],  # one bin full, the next half; a single bin is open both ways
        [[1.0, 1.0, 2.0], [-2.0, 0.0, 0.0]],  # above the last edge: the last bin goes past 1
    ])
    torch.testing.assert_close(layer.shares(x), expected)
    assert layer(x).shape == (3, 2 * 3)


def test_piecewise_embedding_is_continuous_at_the_edges():
    torch.manual_seed(0)
    layer = PiecewiseLinearEmbedding([[0.0, 1.0, 2.0]], dim=4)
    edges = torch.tensor([[0.0], [1.0], [2.0]])
    torch.testing.assert_close(layer(edges - 1e-4), layer(edges + 1e-4), atol=1e-3, rtol=0)
    assert not torch.allclose(layer(edges - 0.5), layer(edges + 0.5))


def test_every_model_trains_on_piecewise_numerics(spec, batch):
    bins = [f.model_copy(update={"bins": [-1.0, 0.0, 0.5, 1.0]}) for f in spec.numeric]
    spec = spec.model_copy(update={"numeric": bins})
    for name in ("shared_bottom", "mmoe", "ple", "per_tier_mmoe", "tamor"):
        model = build_model(ModelConfig(name=name, numeric_embedding="piecewise"), spec)
        logits = model(batch)
        sum(v.sum() for v in logits.values()).backward()
        numeric = model.inputs.numeric if hasattr(model, "inputs") else None
        assert set(logits) == set(spec.task_names)
        assert numeric is None or all(p.grad is not None for p in numeric.parameters()), name
