"""Serving latency and throughput: the tamor graph against a trivial three-deployment Serve graph,
side by side in one run, over real HTTP on loopback; and the Ranker's batched throughput against
calling the model directly.

    python bench/serve_load.py                      # concurrency 1, 8, 32; 100 candidates per request
    python bench/serve_load.py --requests 400 --concurrency 1 8 32 64

Prints candidates/s of the Ranker deployment (dynamic batching, through a handle) and of the bare model; each hop
alone (the bytes it sends and returns, its p50 through the handle beside the same work in this process); then p50 /
p99 latency and requests/s per concurrency for both graphs and the one-process floor, with the ratios the serving
goals read, and the CPU milliseconds each Serve process spends per request.
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
# Serve's settings as the graph's deployments have them (no access log line per request), so only the work differs
SAME_SERVE = {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 128, "logging_config": {"enable_access_log": False}}


@serve.deployment(**SAME_SERVE)
class Echo:
    def __call__(self, x: dict) -> dict:
        return x


@serve.deployment(**SAME_SERVE)
@serve.ingress(trivial_api)
class TrivialIngress:
    """Three deployments like ours (ingress → a → b), doing no work."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    @trivial_api.post("/recommend")
    async def recommend(self, body: dict) -> dict:
        x = await self.a.remote(body)
        return await self.b.remote({"n": len(x.get("item_ids", []))})


def run_bare_app(data_dir: str, model_file: str, port: int) -> None:
    """The floor: the same lookup, model and rerank functions behind one FastAPI app in one uvicorn
    process, no Serve (run in a subprocess, one torch thread like the Ranker's replica)."""
    import torch
    import uvicorn
    from fastapi import Body, HTTPException

    from tamor.models.factory import load_model
    from tamor.platform.data_dir import DataDir
    from tamor.serve.features import lookup_columns
    from tamor.serve.policy import RerankPolicy, rerank
    from tamor.serve.schemas import RecommendRequest
    from tamor.serve.store import EmbeddedStore

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    data = DataDir(data_dir)
    spec, encoder = data.spec(), data.encoder()
    store, model, policy = EmbeddedStore(data, spec, encoder), load_model(model_file), RerankPolicy()
    bare = FastAPI()

    @bare.post("/recommend")
    def recommend(raw: dict = Body(...)) -> dict:
        body = RecommendRequest.model_validate(raw)  # the same request schema as the graph's
        if body.item_ids is None:
            raise HTTPException(422, "item_ids")
        cols, _, _ = lookup_columns(store, encoder, spec, [body.user_id], body.item_ids, body.context)
        probs = model.predict_columns(cols)
        tier = spec.tiers[int(cols["tier"][0])]
        scenarios = [spec.scenarios[int(x)] for x in cols["scenario"]]
        return {"items": rerank(policy, tier, model.tasks, body.item_ids, scenarios, probs, body.top_n)}

    uvicorn.run(bare, host="127.0.0.1", port=port, log_level="warning", access_log=False)


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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="preprocessed data (default: a small synthetic world made here)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--batch-wait-s", type=float, default=None, help="the Ranker's @serve.batch wait (default: AppArgs')")
    p.add_argument("--max-batch", type=int, default=None, help="the Ranker's @serve.batch size (default: AppArgs')")
    p.add_argument("--device", default="cpu", help="the Ranker's device (cuda: one GPU for its replica)")
    return p.parse_args()


def prepared(args: argparse.Namespace, root: Path):
    """The data (made here unless given), a model of the default config and a registry holding it."""
    from tamor.models.config import ModelConfig
    from tamor.models.factory import build_model, save_model
    from tamor.platform.data_dir import DataDir
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.registry import Registry
    from tamor.platform.schema import load_schema
    from tamor.platform.world import WorldConfig

    data = Path(args.data) if args.data else root / "data"
    if not args.data:
        generate(WorldConfig(rows=60_000, seed=0), root / "world")
        preprocess(str(root / "world" / "logs"), load_schema("synthetic"), data)
    model = build_model(ModelConfig(), DataDir(data).spec(), DataDir(data).encoder()).eval()  # latency does not depend on the weights
    save_model(model, root / "model.pt")
    Registry(root / "registry").export(root / "model.pt", {"m": 0.0}, metric="m")
    return data, model


def start_apps(args: argparse.Namespace, data: Path, root: Path, port: int):
    """The composed graph at ``/`` and the trivial one at ``/trivial``, on one Serve instance; the graph's args."""
    from tamor.serve.app import AppArgs, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    batching = {k: v for k, v in (("batch_wait_timeout_s", args.batch_wait_s), ("max_batch_size", args.max_batch)) if v is not None}
    gpu = {"device": "cuda", "ranker_gpus": 1.0} if args.device == "cuda" else {}
    app_args = AppArgs(data_dir=str(data), registry=str(root / "registry"), **batching, **gpu)
    serve.run(build_app(app_args.model_dump()), name="tamor", route_prefix="/")
    serve.run(TrivialIngress.bind(Echo.options(name="EchoA").bind(), Echo.options(name="EchoB").bind()), name="trivial", route_prefix="/trivial")
    return app_args


def ranker_alone(model, data: Path, candidates: int, n_calls: int = 256) -> None:
    """Dynamic batching through a handle with up to ``in_flight`` concurrent calls, against the bare model in this
    process on one thread (as the replica's 0.5 CPU gets OMP_NUM_THREADS=1)."""
    import torch

    from tamor.models.inputs import batch_from_columns

    ranker = serve.get_deployment_handle("Ranker", app_name="tamor")
    frame = pd.read_parquet(data / "test").head(candidates)
    cols = {c: frame[c].to_numpy() for c in frame.columns if c.startswith("f_") or c in ("tier", "scenario")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for _ in range(n_calls):
        model.predict_proba(batch_from_columns(model.spec, cols))
    direct = n_calls * candidates / (time.perf_counter() - start)
    torch.set_num_threads(threads)

    async def via_handle(in_flight: int) -> float:
        gate = asyncio.Semaphore(in_flight)

        async def call():
            async with gate:
                await ranker.rank.remote({"columns": cols})

        await ranker.rank.remote({"columns": cols})
        start = time.perf_counter()
        await asyncio.gather(*[call() for _ in range(n_calls)])
        return n_calls * candidates / (time.perf_counter() - start)

    async def all_levels() -> list[float]:  # one event loop: a handle is bound to the loop it first ran in
        return [await via_handle(in_flight) for in_flight in (1, 32, 128)]

    print(f"\nRanker: {candidates} candidates per call; the bare model (1 thread): {direct:,.0f} candidates/s")
    for in_flight, rate in zip((1, 32, 128), asyncio.run(all_levels())):
        print(f"  through a handle, {in_flight:>3} calls in flight: {rate:>9,.0f} candidates/s ({rate / direct:.2f}x)")


def p50_ms(call, n: int = 100) -> float:
    """The median milliseconds of ``n`` calls of ``call`` in this process."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50))


def hop_table(data: Path, model, body: dict, n: int = 100) -> None:
    """Each hop of the graph alone, from this process through its handle: what it sends and returns (pickled bytes,
    as Ray serialises them) and its p50, beside the same work called in this process; the difference is the hop."""
    import pickle

    import torch

    from tamor.serve.deployments import FeatureLookup, ranked_answer
    from tamor.serve.policy import RerankPolicy

    handles = {name: serve.get_deployment_handle(name, app_name="tamor") for name in ("FeatureLookup", "Ranker")}
    lookup_here = FeatureLookup.func_or_class(str(data))
    args = (body["user_id"], body["item_ids"], None, {}, 500)
    found = lookup_here.find(*args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ranker's replica
    scored = {"probs": model.predict_columns(found["columns"]), "version": "v", "tasks": model.tasks}
    policy = RerankPolicy()
    stages = {  # name: (work in this process, the call through the handle, what it sends, what it returns)
        "Ingress → FeatureLookup": (lambda: lookup_here.find(*args), lambda: handles["FeatureLookup"].lookup.remote(*args), args, found),
        "Ingress → Ranker": (lambda: model.predict_columns(found["columns"]), lambda: handles["Ranker"].rank.remote(found), found, scored),
    }
    rerank_ms = p50_ms(lambda: ranked_answer(policy, found, scored, 10), n)

    async def through(call) -> float:
        await call()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            await call()
            times.append(1000 * (time.perf_counter() - start))
        return float(np.percentile(times, 50))

    here = {name: p50_ms(work, n) for name, (work, _, _, _) in stages.items()}
    torch.set_num_threads(threads)

    async def all_hops() -> dict[str, float]:  # one event loop: a handle is bound to the loop it first ran in
        return {name: await through(call) for name, (_, call, _, _) in stages.items()}

    print(f"\nhops, one request of {len(body['item_ids'])} candidates, p50 over {n} calls:")
    print(f"{'hop':<24} {'sends':>8} {'returns':>8} | {'handle':>8} {'in process':>10} {'the hop':>8}")
    for name, ms in asyncio.run(all_hops()).items():
        sent, returned = (len(pickle.dumps(x, protocol=5)) for x in stages[name][2:])
        print(f"{name:<24} {sent:>7,}B {returned:>7,}B | {ms:>6.1f}ms {here[name]:>8.1f}ms {ms - here[name]:>6.1f}ms")
    print(f"and the rerank in the Ingress: {rerank_ms:.2f} ms")


def start_bare(data: Path, model_file: Path, body: dict):
    """The same functions in one process without Serve (the floor), started and answering; its process and port."""
    import multiprocessing

    import httpx

    port = free_port()
    bare = multiprocessing.get_context("spawn").Process(target=run_bare_app, args=(str(data), str(model_file), port), daemon=True)
    bare.start()
    for _ in range(300):
        try:
            httpx.post(f"http://127.0.0.1:{port}/recommend", json=body, timeout=5)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return bare, port


def serve_processes() -> dict[str, int]:
    """Serve's proxy and every replica of both apps, by name ("tamor:Ranker", "ProxyActor"): their pids, from Ray's
    state API."""
    import ray
    from ray.util.state import list_actors

    # this process's Ray, named: the state API refuses to guess when another Ray runs on the machine
    alive = list_actors(address=ray.get_runtime_context().gcs_address, filters=[("state", "=", "ALIVE")])
    return {a.class_name.removeprefix("ServeReplica:"): a.pid for a in alive if a.class_name.startswith(("ServeReplica:", "ProxyActor"))}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (psutil)."""
    if not pids:
        return {}
    import psutil

    return {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}


def measured_load(url: str, bodies: list[dict], concurrency: int, pids: dict[str, int], graph: str) -> dict:
    """:func:`load`, plus the CPU milliseconds per request each of the graph's processes (and the proxy) spent."""
    mine = {name: pid for name, pid in pids.items() if name.startswith(f"{graph}:") or name == "ProxyActor"}
    before = cpu_seconds(mine)
    result = asyncio.run(load(url, bodies, concurrency))
    after = cpu_seconds(mine)
    result["cpu_ms"] = {name.removeprefix(f"{graph}:"): 1000 * (after[name] - before[name]) / (len(bodies) + 3) for name in mine}
    return result


def load_table(args: argparse.Namespace, app_args, data: Path, port: int, bare_port: int, bodies: list[dict]) -> None:
    """Per concurrency: the graph, the trivial graph and the one-process floor side by side; then where each graph's
    CPU went, per request and process (on 2 CPUs the CPU each request costs bounds the requests/s)."""
    import importlib.util

    # psutil (`pip install -e ".[bench]"`) reads the processes' CPU; without it the table is left out, not the run
    pids, cpu = (serve_processes() if importlib.util.find_spec("psutil") else {}), []
    print(f"\n{args.requests} requests per level, {args.candidates} candidates each, loopback HTTP; Ranker batching "
          f"{app_args.max_batch_size} / {1000 * app_args.batch_wait_timeout_s:g} ms")
    print(f"{'concurrency':>11} | {'tamor p50':>10} {'p99':>8} {'req/s':>7} | {'trivial p50':>11} {'p99':>8} {'req/s':>7} | "
          f"{'p50 ratio':>9} | {'one process p50':>15} {'p99':>8} {'req/s':>7} | {'req/s ratio':>11}")
    for c in args.concurrency:
        ours = measured_load(f"http://127.0.0.1:{port}/recommend", bodies, c, pids, "tamor")
        base = measured_load(f"http://127.0.0.1:{port}/trivial/recommend", bodies, c, pids, "trivial")
        floor = asyncio.run(load(f"http://127.0.0.1:{bare_port}/recommend", bodies, c))
        cpu += [(c, "tamor", ours["cpu_ms"]), (c, "trivial", base["cpu_ms"])]
        errors = (ours["errors"], base["errors"], floor["errors"])
        print(f"{c:>11} | {ours['p50']:>8.1f}ms {ours['p99']:>6.1f}ms {ours['rps']:>7.1f} | {base['p50']:>9.1f}ms "
              f"{base['p99']:>6.1f}ms {base['rps']:>7.1f} | {ours['p50'] / base['p50']:>8.2f}x | {floor['p50']:>13.1f}ms "
              f"{floor['p99']:>6.1f}ms {floor['rps']:>7.1f} | {ours['rps'] / floor['rps']:>10.2f}x"
              + (f"  errors: {errors}" if any(errors) else ""))
    print("\nCPU ms per request, by process:" if pids else "\nCPU per request: psutil is not installed")
    for c, graph, ms in cpu if pids else []:
        parts = ", ".join(f"{name} {v:.1f}" for name, v in sorted(ms.items(), key=lambda kv: -kv[1]))
        print(f"  {graph:>7} at {c:>3}: {parts}; all {sum(ms.values()):.1f}")


def main() -> None:
    from tamor.platform.ray_env import init_ray

    args = parse_args()
    init_ray()
    root = Path(tempfile.mkdtemp(prefix="tamor-serve-bench-"))
    data, model = prepared(args, root)
    port = free_port()
    app_args = start_apps(args, data, root, port)
    ranker_alone(model, data, args.candidates)
    rng = np.random.default_rng(0)
    users = pd.read_parquet(data / "online" / "users")["user_id"].to_numpy()
    items = pd.read_parquet(data / "online" / "items")["item_id"].to_numpy()
    bodies = [
        {"user_id": str(rng.choice(users)), "item_ids": rng.choice(items, min(args.candidates, len(items)), replace=False).tolist(), "top_n": 10}
        for _ in range(args.requests)
    ]
    hop_table(data, model, bodies[0])
    bare, bare_port = start_bare(data, root / "model.pt", bodies[0])
    load_table(args, app_args, data, port, bare_port, bodies)
    bare.terminate()
    serve.shutdown()


if __name__ == "__main__":
    main()
