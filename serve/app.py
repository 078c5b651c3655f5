"""The application builder and its Serve config.

    serve run tamor.serve.app:build_app data_dir=runs/synthetic/data registry=runs/registry
    serve build tamor.serve.app:build_app -o serve_config.yaml     # or: tamor serve --write-config

``build_app`` takes its arguments as a dict (strings from the command line, or a config file's
``args``), so one builder serves ``serve run``, ``serve deploy`` and ``tamor serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from tamor.models.errors import TamorError
from tamor.platform.data_dir import DataDir
from tamor.platform.defaults import DEFAULT_DATA, DEFAULT_REGISTRY, SERVE_PORT
from tamor.platform.registry import Registry, RegistryError
from tamor.serve.deployments import DEPLOYMENTS, RANKER_BATCHING, FeatureLookup, Ingress, context_keys
from tamor.serve.policy import RerankPolicy
from tamor.serve.ranker import Ranker, load_checked

APP_NAME = "tamor"
IMPORT_PATH = "tamor.serve.app:build_app"


class AppArgs(BaseModel):
    """What the serving graph needs: the data (feature spec, online snapshot), a model, the policy."""

    model_config = ConfigDict(extra="forbid")
    data_dir: str = DEFAULT_DATA
    registry: str | None = DEFAULT_REGISTRY
    ref: str = "latest"  # a registry version, alias, latest or best
    checkpoint: str | None = None  # instead of the registry: a checkpoint directory or model.pt
    redis_url: str | None = None  # the Redis backend instead of the embedded snapshot
    device: str = "cpu"
    ranker_cpus: float = Field(DEPLOYMENTS["Ranker"]["ray_actor_options"]["num_cpus"], gt=0)
    ranker_gpus: float = Field(0.0, ge=0)
    max_batch_size: int = Field(RANKER_BATCHING["max_batch_size"], ge=1)
    batch_wait_timeout_s: float = Field(RANKER_BATCHING["batch_wait_timeout_s"], ge=0)
    max_candidates: int = Field(500, ge=1)
    policy: RerankPolicy = Field(default_factory=RerankPolicy)

    def model_source(self, strict: bool = True) -> dict[str, Any]:
        """The Ranker's ``user_config``. A registry ref is pinned to the version it resolves to now, so a
        replica that restarts loads that version, never whatever ``latest`` has become since; with
        ``strict=False`` (writing a config file for later) a registry without versions keeps the ref."""
        if self.checkpoint:
            return {"checkpoint": str(Path(self.checkpoint).resolve())}
        if not self.registry:
            raise TamorError("give a registry or a checkpoint to serve")
        registry = self.registry if "://" in self.registry else str(Path(self.registry).resolve())
        try:
            ref = Registry(registry).resolve(self.ref).name
        except RegistryError:
            if strict:
                raise
            ref = self.ref
        return {"registry": registry, "ref": ref}


def build_app(args: dict[str, Any]) -> Application:
    """The composed graph: Ingress (rerank) → FeatureLookup → Ranker."""
    a = AppArgs.model_validate(args)
    data_dir = str(Path(a.data_dir).resolve())
    lookup = FeatureLookup.bind(data_dir, a.redis_url)
    encoder = DataDir(data_dir).encoder()  # the Ranker refuses a model trained with another encoder
    ranker = Ranker.options(
        ray_actor_options={"num_cpus": a.ranker_cpus, "num_gpus": a.ranker_gpus}, user_config=a.model_source()
    ).bind(encoder.fingerprint, a.device, a.max_batch_size, a.batch_wait_timeout_s)
    ingress = Ingress.options(user_config={"policy": a.policy.model_dump()})
    return ingress.bind(lookup, ranker, a.max_candidates, context_keys(encoder))


def serve_config(args: AppArgs, host: str = "127.0.0.1", port: int = SERVE_PORT, max_ranker_replicas: int = 2) -> dict:
    """A ``serve deploy`` / ``serve run`` config for ``args``: fractional CPUs, Ranker autoscaling."""
    app_args = args.model_dump(exclude_none=True)
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": app_args,
                "deployments": [
                    {"name": "Ingress", "num_replicas": 1, **DEPLOYMENTS["Ingress"]},
                    {"name": "FeatureLookup", "num_replicas": 1, **DEPLOYMENTS["FeatureLookup"]},
                    {
                        "name": "Ranker",
                        **DEPLOYMENTS["Ranker"],
                        "autoscaling_config": {"min_replicas": 1, "max_replicas": max_ranker_replicas, "target_ongoing_requests": 32},
                        "ray_actor_options": {"num_cpus": args.ranker_cpus, "num_gpus": args.ranker_gpus},
                        "user_config": args.model_source(strict=False),
                    },
                ],
            }
        ],
    }


def write_serve_config(path: str | Path, args: AppArgs, **kw: Any) -> dict:
    config = serve_config(args, **kw)
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def start(args: AppArgs, host: str = "127.0.0.1", port: int = SERVE_PORT, blocking: bool = False) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and run the app. Run again (a new model), it replaces
    every replica: requests wait for the new ones and the old ones drain theirs (``DEPLOYMENTS``'s grace
    period). Only the model changes in place, without new replicas, through ``serve deploy`` of the
    config file (:func:`write_serve_config`): there the model is the Ranker's ``user_config``.

    The model is loaded and checked here first, as the Ranker will (:func:`load_checked`): a bad push
    fails in seconds with the reason and never reaches the running app. (Should one get past this, the
    Ranker refuses it too and Serve keeps the previous replicas.)"""
    load_checked(args.model_source(), DataDir(args.data_dir).encoder().fingerprint)
    # one proxy, on the head: more than one node may share a host (scripts/cluster.sh), and a port
    serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
    serve.run(build_app(args.model_dump()), name=APP_NAME, route_prefix="/", blocking=blocking)
