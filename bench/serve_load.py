"""Serving latency and throughput: the tamor graph against a trivial three-deployment Serve graph,
side by side in one run, over real HTTP on loopback; and the Ranker's batched throughput against
calling the model directly.

    python bench/serve_load.py                      # concurrency 1, 8, 32; 100 candidates per request
    python bench/serve_load.py --requests 400 --concurrency 1 8 32 64

Prints p50 / p99 latency and requests/s per concurrency for both graphs with the p50 ratio, then
candidates/s of the Ranker deployment (dynamic batching, through a handle) and of the bare model.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import FastAPI
from ray import serve

trivial_api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
class Echo:
    def __call__(self, x: dict) -> dict:
        return x


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
@serve.ingress(trivial_api)
class TrivialIngress:
    """Three deployments like ours (ingress → a → b), doing no work."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    @trivial_api.post("/recommend")
    async def recommend(self, body: dict) -> dict:
        x = await self.a.remote(body)
        return await self.b.remote({"n": len(x.get("item_ids", []))})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    import httpx

    latencies, errors = [], 0
    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)

    async def worker(client):
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            start = time.perf_counter()
            r = await client.post(url, json=body)
            latencies.append(1000 * (time.perf_counter() - start))
            errors += r.status_code != 200

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        for b in bodies[:3]:  # warm-up
            await client.post(url, json=b)
        start = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return {"p50": np.percentile(latencies, 50), "p99": np.percentile(latencies, 99), "rps": len(bodies) / wall, "errors": errors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="preprocessed data (default: a small synthetic world made here)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--candidates", type=int, default=100)
    args = p.parse_args()

    from tamor.models.config import ModelConfig
    from tamor.models.factory import build_model, save_model
    from tamor.models.feature_spec import FeatureSpec
    from tamor.models.inputs import batch_from_columns
    from tamor.platform.data_dir import DataDir
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.ray_env import init_ray
    from tamor.platform.registry import Registry
    from tamor.platform.schema import load_schema
    from tamor.platform.world import WorldConfig
    from tamor.serve.app import AppArgs, build_app

    init_ray()
    root = Path(tempfile.mkdtemp(prefix="tamor-serve-bench-"))
    data = Path(args.data) if args.data else root / "data"
    if not args.data:
        generate(WorldConfig(rows=60_000, seed=0), root / "world")
        preprocess(str(root / "world" / "logs"), load_schema("synthetic"), data)
    spec = FeatureSpec.load(data)
    model = build_model(ModelConfig(), spec, DataDir(data).encoder()).eval()  # latency does not depend on the weights
    save_model(model, root / "model.pt")
    Registry(root / "registry").export(root / "model.pt", {"m": 0.0}, metric="m")

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(AppArgs(data_dir=str(data), registry=str(root / "registry")).model_dump()), name="tamor", route_prefix="/")
    serve.run(TrivialIngress.bind(Echo.bind(), Echo.bind()), name="trivial", route_prefix="/trivial")

    # The Ranker alone (before any HTTP load): dynamic batching through a handle with up to
    # `in_flight` concurrent calls, against the bare model in this process on one thread (as the
    # replica's 0.5 CPU gets OMP_NUM_THREADS=1).
    import torch

    ranker = serve.get_deployment_handle("Ranker", app_name="tamor")
    frame = pd.read_parquet(data / "test").head(args.candidates)
    cols = {c: frame[c].to_numpy() for c in frame.columns if c.startswith("f_") or c in ("tier", "scenario")}
    n_calls = 256
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for _ in range(n_calls):
        model.predict_proba(batch_from_columns(spec, cols))
    direct = n_calls * args.candidates / (time.perf_counter() - start)
    torch.set_num_threads(threads)

    async def via_handle(in_flight: int) -> float:
        gate = asyncio.Semaphore(in_flight)

        async def call():
            async with gate:
                await ranker.rank.remote(cols)

        await ranker.rank.remote(cols)
        start = time.perf_counter()
        await asyncio.gather(*[call() for _ in range(n_calls)])
        return n_calls * args.candidates / (time.perf_counter() - start)

    print(f"\nRanker: {args.candidates} candidates per call; the bare model (1 thread): {direct:,.0f} candidates/s")
    for in_flight in (1, 32, 128):
        rate = asyncio.run(via_handle(in_flight))
        print(f"  through a handle, {in_flight:>3} calls in flight: {rate:>9,.0f} candidates/s ({rate / direct:.2f}x)")

    rng = np.random.default_rng(0)
    users = pd.read_parquet(data / "online" / "users")["user_id"].to_numpy()
    items = pd.read_parquet(data / "online" / "items")["item_id"].to_numpy()
    bodies = [
        {"user_id": str(rng.choice(users)), "item_ids": rng.choice(items, min(args.candidates, len(items)), replace=False).tolist(), "top_n": 10}
        for _ in range(args.requests)
    ]
    print(f"\n{args.requests} requests per level, {args.candidates} candidates each, loopback HTTP")
    print(f"{'concurrency':>11} | {'tamor p50':>10} {'p99':>8} {'req/s':>7} | {'trivial p50':>11} {'p99':>8} {'req/s':>7} | {'p50 ratio':>9}")
    for c in args.concurrency:
        ours = asyncio.run(load(f"http://127.0.0.1:{port}/recommend", bodies, c))
        base = asyncio.run(load(f"http://127.0.0.1:{port}/trivial/recommend", bodies, c))
        print(f"{c:>11} | {ours['p50']:>8.1f}ms {ours['p99']:>6.1f}ms {ours['rps']:>7.1f} | {base['p50']:>9.1f}ms "
              f"{base['p99']:>6.1f}ms {base['rps']:>7.1f} | {ours['p50'] / base['p50']:>8.2f}x"
              + (f"  errors: {ours['errors']}/{base['errors']}" if ours["errors"] or base["errors"] else ""))

    serve.shutdown()


if __name__ == "__main__":
    main()
