"""`tamor report`: the Markdown report of a run directory written by `tamor demo` (or by hand).

It reads only files: ``paper_table.csv``, ``verdicts.csv``, ``tamor_test_metrics.csv``, ``sweep.json``, ``fig3.json``
and ``fig3.png``, ``serving.json``, ``ab.json``, ``census_table.csv`` — whichever are present.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tamor.models.metrics import JUDGED_POSITIVES, verdict

VERDICT_WORDS = {1: "ahead", 0: "level", -1: "behind"}


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4f")


def cell_verdicts(verdicts: pd.DataFrame) -> pd.Series:
    """Per row of a promotion-gate table (``judged``, ``low``, ``high``; TAMOR as the new model): "ahead", "level" or
    "behind" by the one verdict rule, "" where the cell has too few positives to judge."""
    return pd.Series([VERDICT_WORDS[verdict(low, high)] if judged else "" for judged, low, high in
                      zip(verdicts["judged"], verdicts["low"], verdicts["high"])], index=verdicts.index, dtype=str)


def verdict_line(verdicts: pd.DataFrame) -> str:
    """How many judged cells TAMOR is ahead of MMoE in, level and behind, in one line."""
    calls = cell_verdicts(verdicts).value_counts()
    return (f"TAMOR against MMoE by the paired 95% interval: {calls.get('ahead', 0)} cells ahead, {calls.get('level', 0)} level, "
            f"{calls.get('behind', 0)} behind of {calls.drop('', errors='ignore').sum()} judged")


def _paper_table(run: Path) -> str:
    """The paper's table, with each tier cell's verdict when the run judged them (``verdicts.csv``)."""
    table = pd.read_csv(run / "paper_table.csv")
    line = f"Mean lift {table['lift_pct'].mean():+.2f}%."
    if (run / "verdicts.csv").exists():
        verdicts = pd.read_csv(run / "verdicts.csv")
        calls = verdicts.assign(verdict=cell_verdicts(verdicts).replace("", "–"))
        table = table.merge(calls[calls["slice"] == "tier"].rename(columns={"group": "tier"})[["task", "tier", "verdict"]], how="left")
        line += (f" {verdict_line(verdicts)} (one training run each, test rows resampled, not runs; cells with ≥ {JUDGED_POSITIVES} test positives, overall "
                 "included; a lift inside its interval is noise).")
    return ("## The paper's table: TAMOR vs MMoE, test AUC per task and user tier\n\n" + line + "\n\n" + _md(table)
            + "\n\n![paper table](paper_table.png)\n")


def write_report(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    parts = [f"# tamor report: `{run}`\n"]
    if (run / "timings.json").exists():
        timings = json.loads((run / "timings.json").read_text())
        parts.append("## Steps\n\n" + _md(pd.DataFrame(list(timings.items()), columns=["step", "seconds"])) + "\n")
    if (run / "paper_table.csv").exists():
        parts.append(_paper_table(run))
    if (run / "tamor_test_metrics.csv").exists():
        m = pd.read_csv(run / "tamor_test_metrics.csv")
        scen = m[m["slice"] == "scenario"].pivot(index="group", columns="task", values="auc").reset_index()
        parts.append("## TAMOR: test AUC per scenario\n\n" + _md(scen.rename(columns={"group": "scenario"})) + "\n")
    if (run / "sweep.json").exists():
        s = json.loads((run / "sweep.json").read_text())
        params = pd.DataFrame(list(s["best_params"].items()), columns=["parameter", "best value"])
        parts.append(
            f"## Sweep `{s['name']}`\n\n{s['trials']} trials, {s['stopped_early']} stopped early by ASHA; best "
            f"validation objective {s['best_objective']:.4f} (trial {s['best_trial']}), exported as registry "
            f"version `{s.get('registry_version', '-')}`.\n\n" + _md(params) + "\n\n![trials](trials.png)\n"
        )
    if (run / "fig3.png").exists():
        sil = json.loads((run / "fig3.json").read_text()) if (run / "fig3.json").exists() else {}
        text = ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in sil.items())
        parts.append(f"## Fig. 3: tier-aware vs tier-agnostic representations\n\nSilhouette by user tier: {text}.\n\n![fig3](fig3.png)\n")
    if (run / "serving.json").exists():
        s = json.loads((run / "serving.json").read_text())
        parts.append(
            f"## Serving\n\n{s['requests']} sample requests over HTTP ({s['candidates']} candidates each, model "
            f"`{s['model_version']}`): p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, all status 200: "
            f"{s['all_ok']}.\n\nA sample answer (top 3):\n\n```json\n{json.dumps(s['sample'], indent=1)[:1500]}\n```\n"
        )
    if (run / "ab.json").exists():
        ab = json.loads((run / "ab.json").read_text())
        parts.append(
            f"## Simulated online A/B ({ab.get('days', '?')} days)\n\nNew high-holding users: "
            + ", ".join(f"{k} {v}" for k, v in ab["new_high_holding"].items())
            + " (visitors: " + ", ".join(f"{k} {v}" for k, v in ab["visitors"].items()) + "). "
            f"Lift of {ab['treatment']} over {ab['control']} per visitor: **{100 * ab['lift']:+.2f}%** "
            f"(95% CI {100 * ab['ci95'][0]:+.1f}% to {100 * ab['ci95'][1]:+.1f}%, bootstrap over days). "
            "The paper reports +10.67% online.\n"
        )
    path = run / "report.md"
    path.write_text("\n".join(parts))
    return path
