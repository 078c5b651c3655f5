"""Ray Data preprocessing vs a single-process pandas implementation of the same transformation.

    python bench/preprocess.py --rows 1000000 10000000

For each size: generate the synthetic logs (Ray Data), then time `tamor preprocess` (Ray Data,
streaming) and the same steps in one pandas process (read all, check, fit on train, encode, write
splits and online snapshots), in one run. Prints rows/s of each, the ratio, and the peak resident
memory of the driver process (Ray's driver) and of the pandas process.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PANDAS_VERSION = r'''
import resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from tamor.platform.schema import load_schema
from tamor.platform.validate import check_batch, REASON
from tamor.platform.preprocess import _fit_partials, encode_batch, Fitted, MISSING, SPLITS
src, out = Path(sys.argv[1]), Path(sys.argv[2])
schema = load_schema("synthetic")
start = time.perf_counter()
raw = pd.read_parquet(src)
checked = check_batch(raw, schema)
bad = checked[checked[REASON] != ""]; good = checked[checked[REASON] == ""]
out.mkdir(parents=True)
bad.to_parquet(out / "quarantine.parquet")
t = pd.to_numeric(good[schema.timestamp]); lo, hi = t.min(), t.max() + 1.0
cuts = (lo + 0.75 * (hi - lo), lo + 0.85 * (hi - lo))
tot = _fit_partials(good, schema, cuts).groupby(["column", "value"], as_index=False)["n"].sum()
vocab, stats = {}, {}
for f in schema.features:
    r = tot[tot["column"] == f.column]
    if f.type == "categorical":
        k = r[r["n"] >= schema.preprocess.min_frequency].sort_values(["n", "value"], ascending=[False, True])
        vocab[f.column] = {v: i + 1 for i, v in enumerate(k["value"])}
    else:
        s = dict(zip(r["value"], r["n"])); m = s["__sum__"] / s["__count__"]
        stats[f.column] = (m, float(np.sqrt(max(s["__sumsq__"] / s["__count__"] - m * m, 1e-12))))
enc = encode_batch(good, schema, Fitted(vocab, stats, list(schema.scenario.values)), cuts)
for s in SPLITS:
    enc[enc["split"] == s].drop(columns="split").to_parquet(out / f"{s}.parquet")
enc.sort_values("ts").drop_duplicates("user_id", keep="last").to_parquet(out / "users.parquet")
enc.sort_values("ts").drop_duplicates("item_id", keep="last").to_parquet(out / "items.parquet")
elapsed = time.perf_counter() - start
print(f"{elapsed} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}")
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.ray_env import init_ray
    from tamor.platform.schema import load_schema
    from tamor.platform.world import WorldConfig

    init_ray()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tamor-bench-"))
    results = []
    for rows in args.rows:
        d = root / f"rows{rows}"
        shutil.rmtree(d, ignore_errors=True)
        generate(WorldConfig(rows=rows, rows_per_block=250_000), d)
        start = time.perf_counter()
        preprocess(str(d / "logs"), load_schema("synthetic"), d / "ray")
        ray_s = time.perf_counter() - start
        ray_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        done = subprocess.run([sys.executable, "-c", PANDAS_VERSION, str(d / "logs"), str(d / "pandas")], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:])
            pandas_s, pandas_rss = float("nan"), float("nan")
        else:
            pandas_s, pandas_rss = map(float, done.stdout.split()[-2:])
        results.append((rows, rows / ray_s, rows / pandas_s, ray_rss, pandas_rss))
        shutil.rmtree(d, ignore_errors=True)
    print(f"\n{'rows':>12}{'ray rows/s':>14}{'pandas rows/s':>15}{'ray/pandas':>12}{'driver peak MiB':>17}{'pandas peak MiB':>17}")
    for rows, r, pd_, rr, pr in results:
        print(f"{rows:>12,}{r:>14,.0f}{pd_:>15,.0f}{r / pd_:>11.2f}x{rr:>17,.0f}{pr:>17,.0f}")


if __name__ == "__main__":
    main()
