"""The Ranker deployment: the registry's (or a checkpoint's) model behind dynamic batching, and the checks a model
passes before it serves. The only replica that imports torch and runs the model (the other stages live in
:mod:`tamor.serve.deployments`, and start without it).
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import torch
from ray import serve

from tamor.models.base import MultiTaskModel
from tamor.models.errors import TamorError
from tamor.models.factory import load_model
from tamor.platform.registry import Registry
from tamor.serve.deployments import DEPLOYMENTS, RANKER_BATCHING


class ModelRefused(TamorError, ValueError):
    """A model that must not serve beside this feature store (its encoder differs, or it has none)."""


# What loading a model can raise: a ref that does not resolve, a missing, truncated or foreign file.
LOAD_ERRORS = (TamorError, OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError)
logger = logging.getLogger("ray.serve")  # Serve's own logger: warnings land in the replica's log


def load_checked(config: dict, encoder_fingerprint: str, device: torch.device | str = "cpu") -> tuple[MultiTaskModel, str]:
    """Load the model a Ranker ``user_config`` names and check it may serve beside a feature store
    encoding with ``encoder_fingerprint``: the file is whole (registry sha256), it carries that encoder,
    and a smoke prediction on cold-start rows is finite. Raises one of :data:`LOAD_ERRORS` otherwise."""
    if config.get("checkpoint"):
        file, version = config["checkpoint"], f"checkpoint:{config['checkpoint']}"
    else:
        registry = Registry(config["registry"])
        resolved = registry.resolve(config.get("ref", "latest"))
        file, version = registry.local_model_file(resolved.name), resolved.name
    model = load_model(file, map_location=device)
    if model.encoder is None:
        raise ModelRefused(f"model {version} carries no encoder: re-export it from a checkpoint trained by this version of tamor")
    if model.encoder.fingerprint != encoder_fingerprint:
        raise ModelRefused(
            f"model {version} was trained with encoder {model.encoder.fingerprint} ({model.encoder.dataset}), but the "
            f"feature store encodes with {encoder_fingerprint}: serve it with the data directory it was trained on"
        )
    cold = {**model.encoder.encode({}, n=2), "tier": np.zeros(2, np.int64), "scenario": np.zeros(2, np.int64)}
    if not np.isfinite(model.predict_columns(cold, device)).all():  # a smoke prediction on cold-start rows
        raise ModelRefused(f"model {version} predicts non-finite probabilities")
    return model, version


@serve.deployment(**DEPLOYMENTS["Ranker"])
class Ranker:
    """The registry's (or a checkpoint's) model behind dynamic batching: candidates ``[n]`` → ``[n, T]``.

    ``user_config`` = ``{"registry": ..., "ref": "latest"}`` or ``{"checkpoint": path}``; changing it
    (``serve deploy`` / ``serve.run`` with a new config) swaps the model in place, without a restart.
    A model whose encoder differs from ``encoder_fingerprint`` (the feature store's) is refused.
    """

    def __init__(self, encoder_fingerprint: str, device: str = "cpu", max_batch_size: int = RANKER_BATCHING["max_batch_size"],
                 batch_wait_timeout_s: float = RANKER_BATCHING["batch_wait_timeout_s"]):
        self.device = torch.device(device if device != "cuda" or torch.cuda.is_available() else "cpu")
        self.encoder_fingerprint = encoder_fingerprint
        self.model, self.version, self.last_error = None, "none", None
        self.rank.set_max_batch_size(max_batch_size)
        self.rank.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def reconfigure(self, config: dict) -> None:
        """Load, check, then swap: a model that fails to load or check never replaces a serving one."""
        try:
            model, version = load_checked(config, self.encoder_fingerprint, self.device)
        except LOAD_ERRORS as e:
            if self.model is None:
                raise  # nothing to keep serving: the deployment fails, with the reason
            self.last_error = f"kept {self.version}: could not switch to {config}: {e}"
            logger.warning(self.last_error)
            return
        self.model, self.version, self.last_error = model, version, None  # one assignment: in-flight batches keep the old model

    def check_health(self) -> None:
        """Serve's replica health check: a replica without a model is replaced."""
        if self.model is None:
            raise RuntimeError("no model loaded")

    def model_version(self) -> dict:
        return {"version": self.version, "model": self.model.config.name, "tasks": self.model.tasks,
                "encoder": self.model.encoder.fingerprint, "last_error": self.last_error}

    @serve.batch(**RANKER_BATCHING)
    async def rank(self, found: list[dict]) -> list[dict]:
        """FeatureLookup answers (``columns``: ``[n]`` each) → ``{"probs": [n, T], ...}`` per request, scored
        as one batch (a failed lookup fails its call before it gets here)."""
        model, version = self.model, self.version
        requests = [f["columns"] for f in found]
        sizes = [len(r["tier"]) for r in requests]
        cols = {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}
        parts = np.split(model.predict_columns(cols, self.device), np.cumsum(sizes)[:-1])
        return [{"probs": p, "version": version, "tasks": model.tasks} for p in parts]
