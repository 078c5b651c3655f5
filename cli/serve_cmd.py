"""`tamor serve` (the Serve graph over HTTP) and `tamor features load` (the Redis feature store)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from tamor.cli.common import AddressOpt, CliError, console, data_opt, print_frame, require_data, start_ray, typer_app
from tamor.platform.defaults import DEFAULT_REGISTRY, SERVE_PORT

features_app = typer_app("The online feature store.")


def serve(
    data: str = data_opt(),
    registry: str = typer.Option(DEFAULT_REGISTRY, help="Model registry to serve from."),
    ref: str = typer.Option("latest", help="Registry version or alias: latest | best | production | v0003."),
    checkpoint: Optional[str] = typer.Option(None, help="Serve a checkpoint instead of a registry version."),
    redis: Optional[str] = typer.Option(None, help="Redis URL for the feature store (default: the embedded snapshot)."),
    host: str = typer.Option("127.0.0.1", help="HTTP host (loopback unless you mean otherwise)."),
    port: int = typer.Option(SERVE_PORT, help="HTTP port."),
    gpu: bool = typer.Option(False, "--gpu", help="Run the Ranker on a GPU."),
    write_config: Optional[Path] = typer.Option(None, help="Only write a `serve deploy` / `serve run` config YAML here."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Serve the model over HTTP: FastAPI (and the rerank) → FeatureLookup → Ranker (@serve.batch)."""
    from tamor.serve.app import AppArgs, start, write_serve_config

    args = AppArgs(data_dir=data, registry=registry, ref=ref, checkpoint=checkpoint, redis_url=redis,
                   device="cuda" if gpu else "cpu", ranker_gpus=1.0 if gpu else 0.0)
    if write_config:
        write_serve_config(write_config, args, host=host, port=port)
        console.print(f"wrote {write_config}: `serve run {write_config}` or `serve deploy {write_config}`")
        return
    require_data(data)
    args.model_source()
    start_ray(address, "serve")
    start(args, host=host, port=port, blocking=False)
    console.print(f"serving on http://{host}:{port}  (POST /recommend, GET /healthz, /version, /docs); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.shutdown()


@features_app.command("load")
def features_load(
    redis: str = typer.Option(..., help="Redis URL, e.g. redis://127.0.0.1:6379/0"),
    data: str = data_opt(),
) -> None:
    """Bulk-load the online/ snapshot into Redis for the serving feature store."""
    from tamor.platform.data_dir import DataDir
    from tamor.serve.store import RedisStore

    require_data(data)
    d = DataDir(data)
    counts = RedisStore(redis, d.spec(), d.encoder()).load(d)
    console.print(f"loaded {counts['users']:,} users and {counts['items']:,} items into {redis}")


def simulate(
    data: Path = typer.Option(Path("runs/demo/data"), help="Preprocessed data (online store and encoder)."),
    world: Path = typer.Option(Path("runs/demo/synthetic/world.json"), help="The world.json `tamor generate` wrote."),
    treatment: Path = typer.Option(..., help="Checkpoint (directory or model.pt) of the treatment arm."),
    control: Path = typer.Option(..., help="Checkpoint of the control arm."),
    days: int = typer.Option(7, min=1),
    visit_rate: float = typer.Option(0.3, min=0.01, max=1.0),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Write ab_daily.csv and ab.json here."),
) -> None:
    """Simulated online A/B: new high-holding users per day per arm, with a 95% CI of the lift."""
    from tamor.models.factory import load_model
    from tamor.platform.data_dir import DataDir
    from tamor.platform.world import WorldConfig
    from tamor.serve.simulate import SimConfig, lift_with_ci, model_scorer
    from tamor.serve.simulate import simulate as run
    from tamor.serve.store import EmbeddedStore

    require_data(data)
    for path in (world, treatment, control):
        if not path.exists():
            raise CliError(f"missing {path}")
    raw = json.loads(world.read_text())
    cfg = WorldConfig(**{**raw, "tier_mix": tuple(raw["tier_mix"])})
    d = DataDir(data)
    encoder = d.encoder()
    store = EmbeddedStore(d, d.spec(), encoder)
    arms = {arm: model_scorer(load_model(path), store, encoder, {"page": "home"}) for arm, path in (("treatment", treatment), ("control", control))}
    daily = run(cfg, arms, SimConfig(days=days, visit_rate=visit_rate, seed=seed))
    result = lift_with_ci(daily, "treatment", "control", seed=seed)
    print_frame("new high-holding users per day", daily)
    console.print(f"lift {100 * result['lift']:+.2f}% (95% CI {100 * result['ci95'][0]:+.1f}% to {100 * result['ci95'][1]:+.1f}%)")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        daily.to_csv(out / "ab_daily.csv", index=False)
        (out / "ab.json").write_text(json.dumps({**result, "days": days}, indent=2, default=float))
