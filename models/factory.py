"""Build any model from a config, and save / load it in one format (state dict + config + spec).

The file is a plain ``torch.save`` of tensors, strings and numbers, loaded with
``weights_only=True``: loading never unpickles arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tamor.models.base import MultiTaskModel
from tamor.models.baselines import MMoE, PerTierMMoE, PLEModel, SharedBottom
from tamor.models.calibration import Calibration
from tamor.models.config import MODEL_FILE, ModelConfig
from tamor.models.encoder import Encoder
from tamor.models.errors import TamorError
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


def build_model(config: ModelConfig | dict, spec: FeatureSpec, encoder: Encoder | None = None) -> MultiTaskModel:
    """The model named by ``config.name``, sized from the feature spec; ``encoder`` is the raw-value
    encoder its inputs come from, carried in every file the model is saved to."""
    config = ModelConfig.model_validate(config) if isinstance(config, dict) else config
    model = MODELS[config.name](spec, config)
    model.encoder = encoder
    return model


def model_state(model: MultiTaskModel) -> dict:
    """Everything needed to rebuild the model: weights, config, feature spec, encoder and calibration (plain types only)."""
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": model.config.model_dump(),
        "spec": model.spec.model_dump(),
        "encoder": model.encoder.model_dump() if model.encoder is not None else None,
        "calibration": model.calibration.model_dump() if model.calibration is not None else None,
    }


def model_from_state(state: dict) -> MultiTaskModel:
    if state.get("format") != FORMAT:
        raise TamorError(f"not a tamor model file (format {state.get('format')!r}, expected {FORMAT!r})")
    encoder = Encoder.model_validate(state["encoder"]) if state.get("encoder") else None
    model = build_model(state["config"], FeatureSpec.model_validate(state["spec"]), encoder)
    model.load_state_dict(state["state_dict"])
    model.calibration = Calibration.model_validate(state["calibration"]) if state.get("calibration") else None
    return model.eval()


def save_model(model: MultiTaskModel, path: str | Path) -> None:
    torch.save(model_state(model), path)


def model_file(path: str | Path) -> Path:
    """The model file of a checkpoint directory or registry version (or ``path`` itself if a file)."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultiTaskModel:
    """Load a model saved by :func:`save_model` (a file, or a directory holding ``model.pt``), in eval
    mode, with ``weights_only=True``."""
    return model_from_state(torch.load(model_file(path), map_location=map_location, weights_only=True))
