"""Build any model from a config, and save / load it in one format (state dict + config + spec).

The file is a plain ``torch.save`` of tensors, strings and numbers, loaded with
``weights_only=True``: loading never unpickles arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tamor.models.base import MultiTaskModel
from tamor.models.baselines import MMoE, PerTierMMoE, PLEModel, SharedBottom
from tamor.models.config import ModelConfig
from tamor.models.feature_spec import FeatureSpec
from tamor.models.tamor_model import TAMOR

MODELS: dict[str, type[MultiTaskModel]] = {
    "tamor": TAMOR,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "ple": PLEModel,
    "per_tier_mmoe": PerTierMMoE,
}
FORMAT = "tamor-model/1"


def build_model(config: ModelConfig | dict, spec: FeatureSpec) -> MultiTaskModel:
    """The model named by ``config.name``, sized from the feature spec."""
    config = ModelConfig.model_validate(config) if isinstance(config, dict) else config
    return MODELS[config.name](spec, config)


def model_state(model: MultiTaskModel) -> dict:
    """Everything needed to rebuild the model: weights, config and feature spec (plain types only)."""
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": model.config.model_dump(),
        "spec": model.spec.model_dump(),
    }


def model_from_state(state: dict) -> MultiTaskModel:
    if state.get("format") != FORMAT:
        raise ValueError(f"not a tamor model file (format {state.get('format')!r}, expected {FORMAT!r})")
    model = build_model(state["config"], FeatureSpec.model_validate(state["spec"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()


def save_model(model: MultiTaskModel, path: str | Path) -> None:
    torch.save(model_state(model), path)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultiTaskModel:
    """Load a model saved by :func:`save_model`, in eval mode, with ``weights_only=True``."""
    return model_from_state(torch.load(path, map_location=map_location, weights_only=True))
