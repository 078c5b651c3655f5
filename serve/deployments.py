"""The serving graph, each stage its own Ray Serve deployment, wired with ``DeploymentHandle``s:

    Ingress (FastAPI, rerank) ─► FeatureLookup ─► Ranker (@serve.batch)

The Ingress passes the lookup's ``DeploymentResponse`` straight into the Ranker's call and reranks the two answers
itself with the policy (its ``user_config``): two handle calls per request, as few as three stages allow, since a
call costs Serve's fixed price whatever it carries (docs/decisions.md). Every deployment declares fractional CPUs
so the whole graph starts on a 2-CPU machine. The Ranker, the one stage that runs the model, lives in
:mod:`tamor.serve.ranker`: the others start without importing torch.
"""


import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from tamor.models.encoder import Encoder, as_text, parse_number
from tamor.models.errors import TamorError
from tamor.platform.data_dir import DataDir
from tamor.serve.features import lookup_columns
from tamor.serve.policy import RerankPolicy, rerank
from tamor.serve.schemas import Problem, RecommendRequest, RecommendResponse
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
}
# The Ranker's dynamic batching: no wait for company (requests that queue while a batch runs form the next one, so a
# wait buys no throughput and costs a lone request its length: bench/serve_load.py, docs/decisions.md), at most 32 requests.
RANKER_BATCHING = {"max_batch_size": 32, "batch_wait_timeout_s": 0.0}


class BadRequest(TamorError):
    """A request field the feature lookup cannot answer as asked (an unknown context key or scenario, too many
    items): a 422 naming ``field``, shaped as FastAPI's own validation errors.

    Raised in a downstream replica, it reaches the Ingress through the handles (Ray re-raises it there as an
    instance of this class), which answers it once; so does :class:`StoreUnavailable` (503)."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message)  # both in args: Ray pickles the error across replicas
        self.field, self.message = field, message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def detail(self) -> list[dict]:
        return [{"loc": ["body", *self.field.split(".")], "msg": self.message, "type": "value_error"}]


@serve.deployment(**DEPLOYMENTS["FeatureLookup"])
class FeatureLookup:
    """User and item features from the online store (embedded snapshot or Redis), plus the encoded context."""

    def __init__(self, data_dir: str, redis_url: str | None = None):
        data = DataDir(data_dir)
        self.spec, self.encoder = data.spec(), data.encoder()
        self.store = open_store(data, redis_url, check=False)  # a replica started during an outage answers 503s

    def snapshot(self) -> dict:
        """The served snapshot and encoder (the readiness check's store half); :class:`StoreUnavailable` when none is."""
        return {"snapshot": self.store.snapshot_id(), "encoder": self.encoder.fingerprint}

    def check_context(self, context: dict) -> None:
        """:class:`BadRequest` naming the field unless every key is a context feature, and a numeric one a finite
        number the training data could have held."""
        numeric = {f.name: f for f in self.encoder.numeric if f.side == "context"}
        known = set(context_keys(self.encoder))
        for key, value in context.items():
            if key not in known:
                raise BadRequest(f"context.{key}", f"not a context feature (known: {sorted(known)})")
            if key in numeric:
                number = parse_number(as_text([value])).iloc[0]
                if not np.isfinite(number) or abs(number) > self.encoder.max_abs_numeric:
                    raise BadRequest(f"context.{key}", f"{value!r} is not a finite number within ±{self.encoder.max_abs_numeric:g}")

    async def lookup(self, user_id: str, item_ids: list[str] | None, scenarios: list[str] | None, context: dict,
                     max_candidates: int | None = None) -> dict:
        """Serve's entry to :meth:`find`: run on the replica's event loop where the store is in memory (handing the
        lookup to a thread costs about as much as the lookup), in a thread where it waits on Redis."""
        args = (user_id, item_ids, scenarios, context, max_candidates)
        return await asyncio.to_thread(self.find, *args) if self.store.waits_on_io else self.find(*args)

    def find(self, user_id: str, item_ids: list[str] | None, scenarios: list[str] | None, context: dict,
             max_candidates: int | None = None) -> dict:
        """The model's columns for ``user_id`` × the candidates; :class:`BadRequest` or :class:`StoreUnavailable`
        (the store reconnects by itself), which fail the Ranker's call that takes this answer too."""
        self.check_context(context)
        found = self._lookup(user_id, item_ids, scenarios, context)
        if max_candidates is not None and len(found["item_ids"]) > max_candidates:
            raise BadRequest("scenarios", f"the scenarios hold {len(found['item_ids'])} items, over {max_candidates}")
        return found

    def _lookup(self, user_id: str, item_ids: list[str] | None, scenarios: list[str] | None, context: dict) -> dict:
        if item_ids is None:
            unknown = sorted(set(scenarios) - set(self.spec.scenarios))
            if unknown:
                raise BadRequest("scenarios", f"unknown scenarios {unknown}; known: {self.spec.scenarios}")
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


def context_keys(encoder: Encoder) -> list[str]:
    """The names a request's ``context`` may use: the data's context features."""
    return sorted(f.name for f in (*encoder.numeric, *encoder.categorical) if f.side == "context")


def ranked_answer(policy: RerankPolicy, found: dict, scored: dict, top_n: int) -> dict:
    """The lookup's and the Ranker's answers → the ranked items and what the response reports."""
    ranked = rerank(policy, found["tier"], scored["tasks"], found["item_ids"], found["scenarios"], scored["probs"], top_n)
    known = dict(zip(found["item_ids"], found["items_known"]))
    return {
        "tier": found["tier"],
        "cold_start_user": not found["user_known"],
        "model_version": scored["version"],
        "items": [{**r, "cold_start": not known[r["item_id"]]} for r in ranked],
        "unknown_items": [i for i, k in known.items() if not k],
    }


RETRY = {"Retry-After": "1"}  # seconds; the store reconnects and Serve replaces a lost replica on their own
READY_TIMEOUT_S = 3.0  # /readyz's wait for each stage: a replica that does not answer in time is not ready
# A replica lost mid-request (killed, its node gone) or not yet replaced: the request may be retried shortly.
RESTARTING = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError, BackPressureError)


ERROR_ANSWERS = {  # what /recommend answers besides 200 and 422, for /openapi.json
    413: {"description": "the body is over the size limit", "model": Problem},
    503: {"description": "a feature-store outage or a replica restarting; the Retry-After header says when to retry", "model": Problem},
}


def _reason(error: BaseException) -> str:
    """The message of an error raised in another replica (Ray wraps it; ``cause`` is the original)."""
    cause = getattr(error, "cause", None) or error
    return str(cause).strip().splitlines()[-1] if isinstance(cause, RayActorError) else str(cause)


async def _awaited(response: Any) -> Any:
    return await response


async def answered(response: Any) -> Any:
    """Await a stage's answer; the errors a stage raises become the one HTTP answer each deserves."""
    try:
        return await response
    except BadRequest as e:
        raise HTTPException(422, (getattr(e, "cause", None) or e).detail()) from None
    except StoreUnavailable as e:
        raise HTTPException(503, f"feature store unavailable, retry shortly: {_reason(e)}", headers=RETRY) from None
    except Exception as e:
        if not lost_replica(e):
            raise
        raise HTTPException(503, f"a serving replica is restarting, retry shortly ({type(e).__name__})", headers=RETRY) from None


def lost_replica(error: BaseException) -> bool:
    """A replica lost or not yet replaced, here or upstream (Serve wraps an upstream death, its cause kept)."""
    return isinstance(error, RESTARTING) or isinstance(error.__cause__, RayActorError)


api = FastAPI(title="tamor", description="Tier-aware multi-objective recommendation: lookup → rank → rerank.")
MAX_BODY_BYTES = 64 * 1024


@api.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input (a NaN in it would not even serialise)."""
    errors = [{"loc": [str(part) for part in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


class BodyLimit:
    """ASGI middleware: 413 for a request body over the app's ``state.max_body_bytes``, whether its length is declared
    or it arrives chunked (counted as the endpoint reads it, never held beyond the limit)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = getattr(scope["app"].state, "max_body_bytes", MAX_BODY_BYTES)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await JSONResponse(status_code=413, content={"detail": f"request body over {limit} bytes"})(scope, receive, send)
        size = 0

        async def counted() -> dict:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > limit:  # inside the endpoint's read: FastAPI's exception handling answers it
                raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, counted, send)


api.add_middleware(BodyLimit)


@serve.deployment(**DEPLOYMENTS["Ingress"])
@serve.ingress(api)
class Ingress:
    """The HTTP front (FastAPI): checks the body, calls the FeatureLookup and the Ranker through their handles and
    reranks their answers with the policy (``user_config`` = ``{"policy": ...}``); every error is answered here once."""

    def __init__(self, lookup: DeploymentHandle, ranker: DeploymentHandle, max_candidates: int = 500,
                 context: list[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES):
        self.lookup, self.ranker = lookup, ranker
        self.max_candidates, self.policy = max_candidates, RerankPolicy()
        api.state.max_body_bytes = max_body_bytes
        if context is not None:  # the served data's context keys, stated in /openapi.json
            schema = api.openapi()
            schema["components"]["schemas"]["RecommendRequest"]["properties"]["context"]["propertyNames"] = {"enum": context}

    def reconfigure(self, config: dict) -> None:
        """``user_config`` = ``{"policy": RerankPolicy fields}``: a new policy applies in place, without a restart."""
        self.policy = RerankPolicy.model_validate(config.get("policy") or {})

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """Liveness: the HTTP path answers. Readiness (model and feature store) is ``/readyz``."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when the Ranker holds a model and the feature store serves a snapshot, each answering within
        :data:`READY_TIMEOUT_S`; else 503 with why (a replica restarting, a store outage)."""
        model, store, problems = {}, {}, []
        for name, call in (("model", self.ranker.model_version), ("feature store", self.lookup.snapshot)):
            try:
                answer = await asyncio.wait_for(_awaited(call.remote()), READY_TIMEOUT_S)
                model, store = (answer, store) if name == "model" else (model, answer)
            except TimeoutError:
                problems.append(f"{name}: no answer within {READY_TIMEOUT_S:g} s")
            except (StoreUnavailable, *RESTARTING) as e:
                problems.append(f"{name}: {_reason(e)}")
        body = {"ready": not problems, "model_version": model.get("version"), "feature_snapshot": store.get("snapshot"),
                "problems": problems}
        return JSONResponse(status_code=503 if problems else 200, content=body, headers=RETRY if problems else None)

    @api.get("/version")
    async def version(self) -> dict:
        model = await answered(self.ranker.model_version.remote())
        store = await answered(self.lookup.snapshot.remote())
        return {"model_version": model["version"], "model": model["model"], "tasks": model["tasks"],
                "feature_snapshot": store["snapshot"], "encoder": store["encoder"], "last_model_error": model["last_error"]}

    @api.post("/recommend", response_model=RecommendResponse, responses=ERROR_ANSWERS)
    async def recommend(self, body: RecommendRequest) -> RecommendResponse:
        if body.item_ids is not None and len(body.item_ids) > self.max_candidates:
            raise HTTPException(422, BadRequest("item_ids", f"at most {self.max_candidates} candidate items, got {len(body.item_ids)}").detail())
        # The lookup's answer goes on to the Ranker without a round trip of its own; the policy reranks both here.
        found = self.lookup.lookup.remote(body.user_id, body.item_ids, body.scenarios, body.context, self.max_candidates)
        scored = self.ranker.rank.remote(found)
        found, scored = await answered(found), await answered(scored)
        return RecommendResponse(user_id=body.user_id, **ranked_answer(self.policy, found, scored, body.top_n))
