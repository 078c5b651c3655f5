"""Tree bin edges: where the tasks' rates change, bounded by the train range, at most ``bins`` bins."""

import numpy as np
import pytest

from tamor.platform.tree_bins import tree_edges


def _x(n: int = 20_000) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1.0, 1.0, n)


def test_an_edge_lands_where_a_label_changes_and_the_outer_edges_are_the_train_range():
    x = _x()
    targets = np.stack([(x > 0.3).astype(float), np.zeros_like(x)], axis=1)  # a task with no positives is ignored
    edges = tree_edges(x, targets, bins=4)
    assert edges[0] == pytest.approx(x.min(), abs=1e-6) and edges[-1] == pytest.approx(x.max(), abs=1e-6)
    assert min(abs(e - 0.3) for e in edges) < 0.01
    assert edges == sorted(set(edges))


def test_a_rare_task_gets_its_edge_beside_common_ones():
    x = _x()
    common = [(x < -0.5).astype(float), (x > 0.0).astype(float)]  # 25 % and 50 % positive
    rare = (x > 0.9).astype(float)  # 5 % positive: unscaled, a tree with two splits would spend both on the common tasks
    edges = tree_edges(x, np.stack([*common, rare], axis=1), bins=3)
    assert min(abs(e - 0.9) for e in edges) < 0.01 and len(edges) == 4


def test_no_more_than_bins_bins_and_none_inside_the_minimum_leaf():
    x = _x()
    noisy = (np.random.default_rng(1).uniform(size=x.size) < 0.5 + 0.4 * np.sin(8 * x)).astype(float)[:, None]
    edges = tree_edges(x, noisy, bins=8, min_leaf=500)
    assert 2 < len(edges) <= 9
    inner = np.asarray(edges[1:-1])
    assert all(((x <= e).sum() >= 500) and ((x > e).sum() >= 500) for e in inner)


def test_a_feature_or_labels_without_a_split_get_one_linear_bin():
    x = _x(1_000)
    assert tree_edges(np.full(1_000, 2.5), np.ones((1_000, 1)), bins=16) == [2.5]
    assert tree_edges(x, np.zeros((1_000, 2)), bins=16) == pytest.approx([x.min(), x.max()], abs=1e-6)
