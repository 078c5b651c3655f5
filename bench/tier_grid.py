"""Where tier-awareness pays: TAMOR against our MMoE and a per-tier MMoE over a grid of how differently the
synthetic world's tiers respond (``tier_heterogeneity``) and how much data there is.

    python bench/tier_grid.py --set epochs=8                           # the committed grid (about 80 min on 2 CPUs)
    python bench/tier_grid.py --heterogeneity 0 1 2 --rows 50000 --seeds 2 --set epochs=4   # a short one

Each cell is one run of ``bench/peers.py`` (its own process: the same recipe, the same one bootstrap per judged
cell) under ``--out/h<h>_n<rows>``; ``--also H:ROWS[:KEY=VALUE,...]`` adds a cell off the grid with its own recipe overrides
(by default 1 M rows at heterogeneity 1, 4 epochs: as many steps as 20 epochs at 200 k). A cell already finished is read, not refitted, so a stopped grid resumes.
Writes ``tier_grid.csv`` (per cell and model tamor is judged against: judged cells, ahead / level / behind beyond
the noise, mean AUC difference and the mean of its interval's ends) and ``tier_grid.png`` (tamor − model, with
the interval's mean ends, by heterogeneity).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

PEERS = Path(__file__).with_name("peers.py")
MODELS = ["tamor", "mmoe", "per_tier_mmoe"]


def run_cell(h: float, rows: int, args: argparse.Namespace, sets: tuple[str, ...] = ()) -> pd.DataFrame:
    """One grid cell's judged table (``judged.csv`` of its peers run), fitting it first unless it is there;
    ``sets`` override the run's ``--set`` for this cell."""
    out = args.out / f"h{h:g}_n{rows}"
    judged = out / "judged.csv"
    if not judged.exists():
        recipe = [*args.set, *sets]
        command = [sys.executable, str(PEERS), "--synthetic", str(rows), "--heterogeneity", str(h), "--seeds", str(args.seeds),
                   "--models", *MODELS, "--out", str(out), *(["--set", *recipe] if recipe else [])]
        subprocess.run(command, check=True)
    table = pd.read_csv(judged)
    return table.assign(heterogeneity=h, rows=rows)


def summary(judged: pd.DataFrame) -> pd.DataFrame:
    """Per grid cell and model: counts of the verdicts and the mean difference with its interval's mean ends."""
    interval = judged["95% interval"].str.strip("[]").str.split(",", expand=True).astype(float)
    judged = judged.assign(diff=judged["Δ"].astype(float), low=interval[0], high=interval[1])
    grouped = judged.groupby(["heterogeneity", "rows", "against"])
    table = grouped.agg(cells=("diff", "size"), mean_diff=("diff", "mean"), mean_low=("low", "mean"), mean_high=("high", "mean"))
    verdicts = grouped["verdict"].value_counts().unstack(fill_value=0)
    return table.join(verdicts).reset_index()


def plot(table: pd.DataFrame, path: Path) -> None:
    from tamor.platform.plots import save, subplots

    fig, axes = subplots(1, table["rows"].nunique(), figsize=(5 * table["rows"].nunique(), 3.6), sharey=True, squeeze=False)
    for ax, (rows, part) in zip(axes[0], table.groupby("rows")):
        for model, line in part.groupby("against"):
            line = line.sort_values("heterogeneity")
            ax.errorbar(line["heterogeneity"], line["mean_diff"], yerr=[line["mean_diff"] - line["mean_low"], line["mean_high"] - line["mean_diff"]],
                        marker="o", capsize=3, label=f"tamor − {model}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{rows:,} rows")
        ax.set_xlabel("tier_heterogeneity")
    axes[0][0].set_ylabel("test AUC difference, mean over judged cells")
    axes[0][0].legend(fontsize=8)
    save(fig, path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heterogeneity", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="the recipe for every model (e.g. epochs=6)")
    ap.add_argument("--also", nargs="*", default=["1:1000000:epochs=4"], metavar="H:ROWS[:KEY=VALUE,...]",
                    help="cells off the grid, each with its own recipe overrides")
    ap.add_argument("--out", type=Path, default=Path("runs/tier_grid"))
    args = ap.parse_args()
    cells = [run_cell(h, rows, args) for rows in args.rows for h in args.heterogeneity]
    for extra in args.also:
        h, rows, *sets = extra.split(":", 2)
        cells.append(run_cell(float(h), int(rows), args, tuple(sets[0].split(",")) if sets else ()))
    judged = pd.concat(cells, ignore_index=True)
    table = summary(judged)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "tier_grid.csv", index=False)
    plot(table, args.out / "tier_grid.png")
    print(table.to_markdown(index=False, floatfmt="+.4f"))


if __name__ == "__main__":
    main()
