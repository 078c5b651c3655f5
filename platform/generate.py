"""`tamor generate`: the synthetic world's impression logs as a Ray Data job writing Parquet shards.

Each Ray task draws one block of rows from :mod:`tamor.platform.world` as a pure function of
``(seed, block)``, so 50 M rows is a bigger ``rows`` and more tasks, not a rewrite, and the same seed
gives the same rows wherever the blocks run.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import ray

from tamor.platform.world import WorldConfig, impressions, make_items, make_users


@functools.lru_cache(maxsize=2)
def _population(cfg: WorldConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Rebuilt once per worker process from the seed: cheaper than shipping the tables around.
    return make_users(cfg), make_items(cfg)


def _draw_blocks(batch: dict, cfg: WorldConfig) -> pd.DataFrame:
    users, items = _population(cfg)
    return pd.concat([impressions(cfg, int(b), users, items) for b in batch["id"]], ignore_index=True)


def generate(cfg: WorldConfig, out: str | Path) -> int:
    """Write ``cfg.rows`` impressions as Parquet under ``out/logs`` and the world's config; return rows."""
    out = Path(out)
    logs = out / "logs"
    if logs.exists() and any(logs.iterdir()):
        raise FileExistsError(f"{logs} is not empty: choose a new output directory")
    ds = ray.data.range(cfg.blocks, override_num_blocks=cfg.blocks).map_batches(
        _draw_blocks, fn_kwargs={"cfg": cfg}, batch_size=1, batch_format="numpy", num_cpus=1
    )
    ds.write_parquet(str(logs))
    (out / "world.json").write_text(json.dumps(asdict(cfg), indent=2))
    return cfg.rows
