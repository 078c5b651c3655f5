"""Where `tamor preprocess` spends its time: each stage's seconds and share, per log size, in one run.

    python bench/preprocess.py --rows 1000000 4000000

For each size: generate the synthetic logs (Ray Data), then run `preprocess` with each stage timed on the driver
(the driver waits on Ray Data's execution of each stage, so a stage's time is its wall time). The tree teacher is
split into its fit (on the driver) and its predict (written with the train split). Prints rows/s overall, and a
table of stages: seconds and share of the whole.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

# (module attribute, stage name); a stage nested in another is subtracted from it
STAGES = [
    ("_read_and_check", "read + check rows → staging"),
    ("_quarantine", "quarantine and count reasons"),
    ("_cut_points", "time cut points (sketch)"),
    ("fit", "fit the encoder (vocabularies, statistics)"),
    ("_move_splits", "count the written splits"),
    ("fit_tree_bins", "tree bin edges of numerics"),
    ("write_online", "online snapshots (shuffle by key)"),
    ("fit_teachers", "teacher: fit (driver)"),
    ("write_teacher", "teacher: predict and rewrite train"),
]
NESTED = {"write_teacher": "fit_teachers"}  # write_teacher calls fit_teachers
WHOLE = "_encode_and_write"  # its time not in a stage above is encoding and writing the splits


def timed(seconds: dict[str, float], name: str, fn: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start
    return wrapper


def instrument(seconds: dict[str, float]) -> None:
    """Wrap each stage function where `_preprocess` and its helpers look it up."""
    import tamor.platform.preprocess as pre

    for attr in [a for a, _ in STAGES] + [WHOLE]:
        setattr(pre, attr, timed(seconds, attr, getattr(pre, attr)))


def table(total: float, seconds: dict[str, float]) -> list[tuple[str, float]]:
    own = dict(seconds)
    for outer, inner in NESTED.items():
        own[outer] -= own[inner]
    inside = sum(own[a] for a, _ in STAGES if a not in ("_read_and_check", "_quarantine"))
    lines = [(name, own[attr]) for attr, name in STAGES]
    lines.append(("encode + write splits and raw test", own[WHOLE] - inside))
    lines.append(("rest (listing, stats, cleanup)", total - sum(s for _, s in lines)))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--workdir", default=None)
    args = p.parse_args()
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.ray_env import init_ray
    from tamor.platform.schema import load_schema
    from tamor.platform.world import WorldConfig

    init_ray(verbose=False)
    seconds: dict[str, float] = defaultdict(float)
    instrument(seconds)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tamor-bench-"))
    for rows in args.rows:
        d = root / f"rows{rows}"
        shutil.rmtree(d, ignore_errors=True)
        generate(WorldConfig(rows=rows, rows_per_block=250_000), d)
        seconds.clear()
        start = time.perf_counter()
        preprocess(str(d / "logs"), load_schema("synthetic"), d / "data")
        total = time.perf_counter() - start
        print(f"\n{rows:,} rows: {total:.1f} s, {rows / total:,.0f} rows/s")
        print(f"{'stage':<44}{'s':>9}{'share':>8}")
        for name, s in table(total, seconds):
            print(f"{name:<44}{s:>9.1f}{s / total:>8.0%}")
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
