"""`tamor demo` end to end at tiny sizes: the table, the report, a served answer, the A/B result.
Without its sweep step (tests/tuning runs sweeps), with one worker per training run (tests/platform/test_train.py runs
two DDP workers): the served model is the TAMOR run, exported to the registry."""

import json

import pandas as pd
from rich.console import Console

from helpers import TINY
from tamor.cli.demo import DemoConfig, run_demo
from tamor.cli.report import write_report


def test_a_reduced_demo_runs_end_to_end(ray_session, tmp_path):
    out = run_demo(
        DemoConfig(out=tmp_path / "demo", rows=20_000, users=1_000, epochs=1, workers=1, sweep_trials=0, requests=5,
                   ab_days=2, model_overrides=TINY.model_dump(exclude={"name"})),
        Console(width=120),
    )
    table = pd.read_csv(out / "paper_table.csv")
    assert len(table) == 15 and {"auc_tamor", "auc_mmoe", "lift_pct"} <= set(table.columns)
    verdicts = pd.read_csv(out / "verdicts.csv")  # each cell judged by the paired interval, not by the sign of the lift
    assert len(verdicts) == 5 * 4 and {"auc_tamor", "auc_mmoe", "low", "high", "judged"} <= set(verdicts.columns)
    judged = verdicts[verdicts["judged"]]
    assert len(judged) and (judged["low"] <= judged["high"]).all() and judged["positives"].min() >= 50
    serving = json.loads((out / "serving.json").read_text())
    assert serving["all_ok"] and serving["sample"]["items"] and serving["model_version"].startswith("v")
    ab = json.loads((out / "ab.json").read_text())
    assert set(ab["new_high_holding"]) == {"tamor", "mmoe"} and len(ab["ci95"]) == 2
    report = (out / "report.md").read_text()
    assert "TAMOR against MMoE by the paired 95% interval" in report and "| verdict" in report
    for heading in ("The paper's table", "per scenario", "Fig. 3", "Serving", "Simulated online A/B"):
        assert heading in report, heading
    assert not (out / "sweep.json").exists() and "Sweep" not in report
    assert (out / "fig3.png").stat().st_size > 10_000
    assert write_report(out) == out / "report.md"  # `tamor report` re-renders from the files alone
