"""The serving graph, each stage its own Ray Serve deployment, wired with ``DeploymentHandle``s:

    Ingress (FastAPI) ─► FeatureLookup ─► Ranker (@serve.batch) ─► Reranker

The Ingress passes each stage's ``DeploymentResponse`` straight into the next call, so answers go
replica to replica (lookup → Ranker, lookup + Ranker → Reranker) and only the final one comes back.
Every deployment declares fractional CPUs so the whole graph starts on a 2-CPU machine.
"""


import logging
import pickle
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from tamor.models.base import MultiTaskModel
from tamor.models.encoder import as_text, parse_number
from tamor.models.errors import TamorError
from tamor.models.factory import load_model
from tamor.platform.data_dir import DataDir
from tamor.platform.registry import Registry
from tamor.serve.features import lookup_columns, score_columns
from tamor.serve.policy import RerankPolicy, rerank
from tamor.serve.schemas import RecommendRequest, RecommendResponse
from tamor.serve.store import StoreUnavailable, open_store

# Each deployment's resources and concurrency, named once (decorators, the app builder and the
# `serve deploy` config read this table). Fractional CPUs: the graph starts on a 2-CPU machine.
# No per-request access log: one INFO line per request per replica costs every hop (errors still log).
# A redeploy (`tamor serve` / `serve.run` again, a new model) replaces every replica, and an old
# replica drains its in-flight requests through the *new* downstream replicas, which may take
# longer than Serve's default 20 s to start on a busy machine: past the grace period the old
# replica is killed and its requests fail with a 500 (seen in a full test run). Two minutes covers a start.
_COMMON = {"logging_config": {"enable_access_log": False}, "graceful_shutdown_timeout_s": 120.0}
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "Ingress": {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 128, **_COMMON},
    "FeatureLookup": {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 64, **_COMMON},
    "Ranker": {"ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 128, **_COMMON},
    "Reranker": {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 64, **_COMMON},
}


class ModelRefused(TamorError, ValueError):
    """A model that must not serve beside this feature store (its encoder differs, or it has none)."""


# What loading a model can raise: a ref that does not resolve, a missing, truncated or foreign file.
LOAD_ERRORS = (TamorError, OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError)
logger = logging.getLogger("ray.serve")


@serve.deployment(**DEPLOYMENTS["FeatureLookup"])
class FeatureLookup:
    """User and item features from the online store (embedded snapshot or Redis), plus the encoded context."""

    def __init__(self, data_dir: str, redis_url: str | None = None):
        data = DataDir(data_dir)
        self.spec, self.encoder = data.spec(), data.encoder()
        self.store = open_store(data, redis_url, check=False)  # a replica started during an outage answers 503s

    def snapshot(self) -> dict:
        """The served snapshot, or why there is none (``unavailable``): the readiness check's store half."""
        try:
            return {"snapshot": self.store.snapshot_id(), "encoder": self.encoder.fingerprint}
        except StoreUnavailable as e:
            return {"snapshot": None, "encoder": self.encoder.fingerprint, "unavailable": str(e)}

    def check_context(self, context: dict) -> str | None:
        """What is wrong with a request's context, naming the field, or None: every key must be a
        context feature, and a numeric one a finite number the training data could have held."""
        numeric = {f.name: f for f in self.encoder.numeric if f.side == "context"}
        known = numeric.keys() | {f.name for f in self.encoder.categorical if f.side == "context"}
        for key, value in context.items():
            if key not in known:
                return f"context.{key}: not a context feature (known: {sorted(known)})"
            if key in numeric:
                number = parse_number(as_text([value])).iloc[0]
                if not np.isfinite(number) or abs(number) > self.encoder.max_abs_numeric:
                    return f"context.{key}: {value!r} is not a finite number within ±{self.encoder.max_abs_numeric:g}"
        return None

    def lookup(self, user_id: str, item_ids: list[str] | None, scenarios: list[str] | None, context: dict,
               max_candidates: int | None = None) -> dict:
        """The model's columns for ``user_id`` × the candidates, or ``{"error": why}`` (a 422) or
        ``{"unavailable": why}`` (a 503): the Ranker and Reranker pass those through."""
        problem = self.check_context(context)
        if problem:
            return {"error": problem}
        try:
            found = self._lookup(user_id, item_ids, scenarios, context)
        except StoreUnavailable as e:  # answered 503 + Retry-After by the ingress; the store reconnects by itself
            return {"unavailable": str(e)}
        if max_candidates is not None and len(found.get("item_ids", [])) > max_candidates:
            return {"error": f"the scenarios hold {len(found['item_ids'])} items, over {max_candidates}"}
        return found

    def _lookup(self, user_id: str, item_ids: list[str] | None, scenarios: list[str] | None, context: dict) -> dict:
        if item_ids is None:
            unknown = sorted(set(scenarios) - set(self.spec.scenarios))
            if unknown:
                return {"error": f"unknown scenarios {unknown}; known: {self.spec.scenarios}"}
            item_ids = self.store.item_ids([self.spec.scenarios.index(s) for s in scenarios])
        cols, user_known, items_known = lookup_columns(self.store, self.encoder, self.spec, [user_id], list(item_ids), context)
        user_tier = int(self.store.get("users", [user_id])[0]["tier"].iloc[0]) if not len(item_ids) else int(cols["tier"][0])
        return {
            "columns": cols,
            "item_ids": list(item_ids),
            "items_known": items_known.tolist(),
            "user_known": bool(user_known[0]),
            "tier": self.spec.tiers[user_tier],
            "scenarios": [self.spec.scenarios[int(s)] for s in cols["scenario"]],
        }


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
    if not np.isfinite(score_columns(model, cold, device)).all():  # a smoke prediction on cold-start rows
        raise ModelRefused(f"model {version} predicts non-finite probabilities")
    return model, version


@serve.deployment(**DEPLOYMENTS["Ranker"])
class Ranker:
    """The registry's (or a checkpoint's) model behind dynamic batching: candidates ``[n]`` → ``[n, T]``.

    ``user_config`` = ``{"registry": ..., "ref": "latest"}`` or ``{"checkpoint": path}``; changing it
    (``serve deploy`` / ``serve.run`` with a new config) swaps the model in place, without a restart.
    A model whose encoder differs from ``encoder_fingerprint`` (the feature store's) is refused.
    """

    def __init__(self, encoder_fingerprint: str, device: str = "cpu", max_batch_size: int = 32, batch_wait_timeout_s: float = 0.003):
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
        torch.set_grad_enabled(False)
        self.model, self.version, self.last_error = model, version, None  # one assignment: in-flight batches keep the old model

    def check_health(self) -> None:
        """Serve's replica health check: a replica without a model is replaced."""
        if self.model is None:
            raise RuntimeError("no model loaded")

    def model_version(self) -> dict:
        return {"version": self.version, "model": self.model.config.name, "tasks": self.model.tasks,
                "encoder": self.model.encoder.fingerprint, "last_error": self.last_error}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.003)
    async def rank(self, found: list[dict]) -> list[dict]:
        """FeatureLookup answers (``columns``: ``[n]`` each) → ``{"probs": [n, T], ...}`` per request, scored
        as one batch; an answer without columns (an error) passes through unscored."""
        model, version = self.model, self.version
        requests = [f["columns"] for f in found if "columns" in f]
        out: list[dict] = [{} for _ in found]
        if requests:
            sizes = [len(r["tier"]) for r in requests]
            cols = {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}
            parts = iter(np.split(score_columns(model, cols, self.device), np.cumsum(sizes)[:-1]))
            out = [{"probs": next(parts), "version": version, "tasks": model.tasks} if "columns" in f else {} for f in found]
        return out


@serve.deployment(**DEPLOYMENTS["Reranker"])
class Reranker:
    """Per-tier objective weights, eligibility filters and a per-scenario cap → the final ranking."""

    def __init__(self, policy: dict | None = None):
        self.policy = RerankPolicy.model_validate(policy or {})

    def reconfigure(self, config: dict) -> None:
        if config.get("policy"):
            self.policy = RerankPolicy.model_validate(config["policy"])

    def rerank(self, found: dict, scored: dict, top_n: int) -> dict:
        """The lookup's and the Ranker's answers → the ranked items and what the response reports
        (or the lookup's error, passed through)."""
        if "columns" not in found:
            return found
        ranked = rerank(self.policy, found["tier"], scored["tasks"], found["item_ids"], found["scenarios"], scored["probs"], top_n)
        known = dict(zip(found["item_ids"], found["items_known"]))
        return {
            "tier": found["tier"],
            "cold_start_user": not found["user_known"],
            "model_version": scored["version"],
            "items": [{**r, "cold_start": not known[r["item_id"]]} for r in ranked],
            "unknown_items": [i for i, k in known.items() if not k],
        }


api = FastAPI(title="tamor", description="Tier-aware multi-objective recommendation: lookup → rank → rerank.")
MAX_BODY_BYTES = 64 * 1024
RETRY = {"Retry-After": "1"}  # seconds; the store reconnects on its own


@api.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input (a NaN in it would not even serialise)."""
    errors = [{"loc": [str(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


@api.middleware("http")
async def limit_body(request: Request, call_next):
    limit = getattr(request.app.state, "max_body_bytes", MAX_BODY_BYTES)
    too_big = JSONResponse(status_code=413, content={"detail": f"request body over {limit} bytes"})
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return too_big
    if length is None and request.method in ("POST", "PUT", "PATCH"):  # chunked: count while reading, stop at the limit
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
        request._body = b"".join(chunks)  # Starlette replays a read body to the endpoint
    return await call_next(request)


@serve.deployment(**DEPLOYMENTS["Ingress"])
@serve.ingress(api)
class Ingress:
    def __init__(self, lookup: DeploymentHandle, ranker: DeploymentHandle, reranker: DeploymentHandle,
                 max_candidates: int = 500, max_body_bytes: int = MAX_BODY_BYTES):
        self.lookup, self.ranker, self.reranker = lookup, ranker, reranker
        self.max_candidates = max_candidates
        api.state.max_body_bytes = max_body_bytes

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the HTTP path answers. Readiness (model and feature store) is ``/readyz``."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when the Ranker holds a model and the feature store serves a snapshot; else 503 with why."""
        model = await self.ranker.model_version.remote()
        store = await self.lookup.snapshot.remote()
        problems = [store["unavailable"]] if store.get("unavailable") else []
        body = {"ready": not problems, "model_version": model["version"], "feature_snapshot": store["snapshot"], "problems": problems}
        return JSONResponse(status_code=503 if problems else 200, content=body, headers=RETRY if problems else None)

    @api.get("/version")
    async def version(self) -> dict:
        model = await self.ranker.model_version.remote()
        store = await self.lookup.snapshot.remote()
        return {"model_version": model["version"], "model": model["model"], "tasks": model["tasks"],
                "feature_snapshot": store["snapshot"], "encoder": store["encoder"], "last_model_error": model["last_error"]}

    @api.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: RecommendRequest) -> RecommendResponse:
        if body.item_ids is not None and len(body.item_ids) > self.max_candidates:
            raise HTTPException(422, f"at most {self.max_candidates} candidate items, got {len(body.item_ids)}")
        # Composed by passing responses on: the lookup's answer goes to the Ranker, and both to the
        # Reranker, replica to replica, without coming back here in between (one round trip, not three).
        found = self.lookup.lookup.remote(body.user_id, body.item_ids, body.scenarios, body.context, self.max_candidates)
        scored = self.ranker.rank.remote(found)
        answer = await self.reranker.rerank.remote(found, scored, body.top_n)
        if "error" in answer:
            raise HTTPException(422, answer["error"])
        if "unavailable" in answer:
            raise HTTPException(503, f"feature store unavailable, retry shortly: {answer['unavailable']}", headers=RETRY)
        return RecommendResponse(user_id=body.user_id, **answer)
