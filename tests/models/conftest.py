"""Fixtures for model tests: a small spec and a batch (no Ray, no files)."""

import pytest
import torch

from helpers import make_spec, planted_columns
from tamor.models.feature_spec import FeatureSpec
from tamor.models.inputs import batch_from_columns


@pytest.fixture
def spec() -> FeatureSpec:
    return make_spec()


@pytest.fixture
def batch(spec):
    torch.manual_seed(0)
    return batch_from_columns(spec, planted_columns(spec, 64, seed=1))
