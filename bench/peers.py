"""The peer benchmark, side by side in one run: tamor's models, torch-rechub's MMoE and PLE, and a
scikit-learn HistGradientBoosting per task, on the same preprocessed splits with one protocol.

    pip install -e ".[bench]"                      # torch-rechub, pinned
    python bench/peers.py --source ../shared/data/census-income/census-income.test.gz --schema census_income --seeds 3
    python bench/peers.py --synthetic 200000 --seeds 3 --models mmoe tamor tamor:correction_decay=3

The splits come from `tamor preprocess` (Ray Data): one encoder, the same features for every model (the tier and
scenario columns included). Every deep model, torch-rechub's too, is fitted by `tamor train`'s recipe through
its own step (:mod:`tamor.platform.step`): the same optimiser, loss and teacher mixing, moving average, epoch
shuffle and stopping rule, on splits held in memory; ``--set`` changes the recipe for every model, and a variant
``name:key=value,...`` for one. N seeds each. Test AUC and log loss per task × (overall, each tier) are written as
mean ± std (``peers.csv``, ``peers.md``) with the wall time of each fit, and tamor's AUC difference to our MMoE
and to every model ahead of it with a paired bootstrap interval over the test rows and seeds; with more seeds
than ``--draw`` K, how often a draw of K seeds puts tamor at or above each model in each judged cell
(``draws.csv``). ``predictions.npz`` keeps the test probabilities, and ``--from-run`` summarises a finished run
again without fitting (``--data <its data> --out <its directory> --from-run``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from seed_stats import seed_draws  # bench/, beside this script
from torch import Tensor, nn

from tamor.cli.common import load_config
from tamor.models.config import ModelConfig
from tamor.models.factory import MODELS, build_model
from tamor.models.feature_spec import SIDES, FeatureSpec
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.models.loss import MultiTaskLoss
from tamor.models.metrics import JUDGED_POSITIVES, bootstrap_mean_aucs, difference_interval, evaluate_predictions, verdict
from tamor.platform.data_dir import DataDir
from tamor.platform.step import (
    EarlyStopping,
    Learner,
    calibrate,
    epoch_generator,
    in_order,
    memory_epoch,
    metrics_of,
    predict_split,
    train_epoch,
    validation_metrics,
)
from tamor.platform.teacher import feature_columns, features_of, has_teacher, new_tree
from tamor.platform.train_config import TrainConfig

TAMOR_MODELS = ["shared_bottom", "mmoe", "ple", "per_tier_mmoe", "tamor"]
PEERS = ["rechub_mmoe", "rechub_ple", "hgb"]
VERDICTS = {1: "ahead beyond the noise", 0: "level", -1: "behind beyond the noise"}
EVAL_BATCH = 8192  # rows scored at once on the validation and test splits


def variant(text: str, sets: list[str]) -> TrainConfig:
    """The training config of a model or variant, ``name[:key=value,...]``: `tamor train`'s defaults, then the
    run's ``--set`` overrides, then the variant's (model fields by their own name, e.g. ``tamor:correction_decay=3``,
    ``mmoe:embedding_dim=16``; training fields too, e.g. ``tamor:ema_decay=0``, ``mmoe:distill=0``)."""
    name, _, own = text.partition(":")
    fields = [item for item in own.split(",") if item]
    fields = [f"model.{item}" if item.split("=", 1)[0] in ModelConfig.model_fields else item for item in fields]
    model = name if name in MODELS else "mmoe"  # a peer's (rechub_*, hgb) config carries the recipe only
    return load_config(TrainConfig, None, {"model.name": model}, [*sets, *fields], f"variant {text!r}")


# ------------------------------------------------------------------------------------------ data


def load_split(data: DataDir, split: str, spec: FeatureSpec, with_teacher: bool = False) -> dict[str, Tensor]:
    frame = pd.read_parquet(data.split(split), columns=batch_columns(spec, with_teacher=with_teacher))
    return batch_from_columns(spec, {c: frame[c].to_numpy() for c in frame.columns})


# ------------------------------------------------------------------------------------------ torch-rechub


class RechubAdapter(nn.Module):
    """A torch-rechub multi-task model behind tamor's batch → ``{task: logit}`` interface."""

    def __init__(self, kind: str, spec: FeatureSpec, embed_dim: int = 16):
        super().__init__()
        from torch_rechub.basic.features import DenseFeature, SparseFeature
        from torch_rechub.models.multi_task import MMOE, PLE

        self.spec, self.tasks = spec, spec.task_names
        self.fields = [(f"cat_{s}", i, f"f_{f.name}") for s in SIDES for i, f in enumerate(spec.categorical_on(s))]
        self.fields += [(f"num_{s}", i, f"f_{f.name}") for s in SIDES for i, f in enumerate(spec.numeric_on(s))]
        vocab = {f"f_{f.name}": f.vocab_size for f in spec.categorical}
        features = [SparseFeature(name, vocab[name], embed_dim=embed_dim) if key.startswith("cat") else DenseFeature(name)
                    for key, _, name in self.fields]
        types = ["classification"] * len(self.tasks)
        towers = [{"dims": [8]} for _ in self.tasks]
        if kind == "mmoe":  # torch-rechub's census example settings
            self.net = MMOE(features, types, n_expert=8, expert_params={"dims": [16]}, tower_params_list=towers)
        else:
            self.net = PLE(features, types, n_level=1, n_expert_specific=2, n_expert_shared=1, expert_params={"dims": [16]},
                           tower_params_list=towers)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = {name: batch[key][:, i] for key, i, name in self.fields}
        probs = self.net(x).clamp(1e-7, 1 - 1e-7)  # [B, T] probabilities
        logits = torch.logit(probs)
        return {t: logits[:, i] for i, t in enumerate(self.tasks)}


# ------------------------------------------------------------------------------------------ one protocol


def fit_torch(make: Callable[[], nn.Module], spec: FeatureSpec, splits: dict, cfg: TrainConfig) -> tuple[dict[str, np.ndarray], int]:
    """`tamor train`'s recipe on splits in memory, through the same step (:mod:`tamor.platform.step`): the same
    optimiser, loss, moving average, calibration, epoch shuffle and stopping rule; the test predictions
    (:func:`predict_split`) of the best epoch's judged weights and calibration, and the epochs run."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    learner = Learner.build(make(), spec, cfg, device)
    stopping, best, epochs = EarlyStopping(cfg.mode, cfg.patience), None, 0
    for epoch in range(cfg.epochs):
        batches = memory_epoch(splits["train"], cfg.batch_size, cfg.shuffle_buffer, epoch_generator(cfg.seed, epoch))
        stats = train_epoch(learner, batches)
        epochs += 1
        if stats.diverged:
            break
        valid = predict_split(learner.judged, in_order(splits["valid"], EVAL_BATCH), device)
        table = metrics_of(calibrate(learner.judged, valid), spec)
        if stopping.update(validation_metrics(table, spec, cfg.objective)[cfg.metric]):
            best = copy.deepcopy(learner.judged.state_dict()), learner.judged.calibration
        if stopping.stop:
            break
    if best is not None:
        learner.judged.load_state_dict(best[0])
        learner.judged.calibration = best[1]
    return predict_split(learner.judged, in_order(splits["test"], EVAL_BATCH), device), epochs


def tree_features(data: DataDir, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """``{split: [N, F]}`` for train and test: the tree teacher's feature matrix (``features_of``), read once per run."""
    return {s: features_of(pd.read_parquet(data.split(s), columns=feature_columns(spec)), spec) for s in ("train", "test")}


def fit_hgb(spec: FeatureSpec, x: dict[str, np.ndarray], splits: dict, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """One default HistGradientBoostingClassifier per task: the tree teacher's model (``new_tree``) on the
    teacher's feature matrix ``x`` (:func:`tree_features`), fitted on the rows each task counts in."""
    x_train, x_test = x["train"], x["test"]
    train, loss_mask = splits["train"], MultiTaskLoss(spec).row_mask(splits["train"]).numpy()
    out = []
    for t in range(len(spec.task_names)):
        keep = loss_mask[:, t] > 0
        out.append(new_tree(spec, seed).fit(x_train[keep], train["labels"][keep, t].numpy()).predict_proba(x_test)[:, 1])
    return {"probs": np.stack(out, axis=1)}, 0


# ------------------------------------------------------------------------------------------ the run


def fit(name: str, cfg: TrainConfig, spec: FeatureSpec, splits: dict, x_tree: dict | None) -> tuple[dict[str, np.ndarray], int]:
    """One model (or variant, or peer) fitted with its config's seed: test probabilities ``[N, T]`` (``probs``; a deep
    model's ``logits`` too) and epochs."""
    model = name.partition(":")[0]
    if model == "hgb":
        return fit_hgb(spec, x_tree, splits, cfg.seed)
    if model.startswith("rechub_"):
        return fit_torch(lambda: RechubAdapter(model[len("rechub_"):], spec), spec, splits, cfg)
    return fit_torch(lambda: build_model(cfg.model, spec), spec, splits, cfg)


def run(data: DataDir, args) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every model × seed on the same splits: the metrics per fit, and each model's test probabilities
    ``[seeds, N, T]`` (for the paired intervals)."""
    spec = data.spec()
    configs = {name: variant(name, args.set) for name in args.models}
    distilling = any(c.distill > 0 for c in configs.values())
    if distilling and not has_teacher(data.split("train"), spec):
        sys.exit(f"{data.root}'s train split has no teacher columns: preprocess it again, or pass --set distill=0")
    splits = {s: load_split(data, s, spec, with_teacher=s == "train" and distilling) for s in ("train", "valid", "test")}
    test = splits["test"]
    x_tree = tree_features(data, spec) if "hgb" in args.models else None
    results, predictions = [], {name: [] for name in args.models}
    for seed in range(args.seeds):
        for name, cfg in configs.items():
            start = time.perf_counter()
            preds, epochs = fit(name, cfg.model_copy(update={"seed": seed}), spec, splits, x_tree)
            seconds = time.perf_counter() - start
            metrics = test_metrics(spec, preds, test).assign(model=name, seed=seed, seconds=seconds, epochs=epochs)
            results.append(metrics)
            predictions[name].append(preds["probs"].astype(np.float32))
            overall = metrics[metrics["slice"] == "overall"].set_index("task")["auc"].round(4).to_dict()
            print(f"seed {seed} {name:14s} {seconds:6.1f} s {epochs:3d} epochs  test AUC {overall}", flush=True)
    return pd.concat(results, ignore_index=True), {name: np.stack(p) for name, p in predictions.items()}


def test_metrics(spec: FeatureSpec, preds: dict[str, np.ndarray], test: dict[str, Tensor]) -> pd.DataFrame:
    """AUC, log loss and ECE per task × (overall, each tier) of the test probabilities, and ``ece_raw``: the ECE of
    the uncalibrated sigmoid of a deep model's logits (NaN for a model without logits)."""
    def table(probs: np.ndarray) -> pd.DataFrame:
        metrics = evaluate_predictions(spec, probs, test["labels"].numpy(), test["label_mask"].numpy(), test["tier"].numpy(),
                                       test["scenario"].numpy())
        return metrics[metrics["slice"] != "scenario"]

    metrics = table(preds["probs"])
    raw = table(1 / (1 + np.exp(-preds["logits"].astype(np.float64))))["ece"].to_numpy() if "logits" in preds else np.nan
    return metrics.assign(ece_raw=raw)


def summarise(results: pd.DataFrame, models: list[str], predictions: dict[str, np.ndarray], spec: FeatureSpec,
              test: dict[str, Tensor]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Mean ± std tables of AUC, log loss and calibration error (ECE) by metric; wall time per fit; and tamor judged
    against every model (:func:`judge`)."""
    cell, metrics = ["task", "slice", "group"], ("auc", "logloss", "ece", "ece_raw")
    results = results.assign(**{m: np.nan for m in metrics if m not in results})  # a run recorded before a column
    stats = results.groupby([*cell, "model"], sort=False).agg(
        positives=("positives", "first"), **{f"{m}{part}": (m, how) for m in metrics for part, how in (("", "mean"), ("_std", "std"))}
    ).reset_index()
    for m in metrics:
        stats[f"{m}_text"] = [f"{a:.4f} ± {b:.4f}" if np.isfinite(a) else "–" for a, b in zip(stats[m], stats[f"{m}_std"].fillna(0))]
    wide = {m: stats.pivot_table(index=[*cell, "positives"], columns="model", values=f"{m}_text", aggfunc="first", sort=False)[models]
            .reset_index() for m in metrics}
    times = results.groupby("model", sort=False).agg(seconds=("seconds", "mean"), epochs=("epochs", "mean")).loc[models]
    auc = stats.pivot_table(index=[*cell, "positives"], columns="model", values="auc", sort=False)
    judged = judge(auc, predictions, spec, test) if "tamor" in auc else pd.DataFrame()
    return wide, judged, times


def judge(auc: pd.DataFrame, predictions: dict[str, np.ndarray], spec: FeatureSpec, test: dict[str, Tensor]) -> pd.DataFrame:
    """In every cell with ≥ ``JUDGED_POSITIVES`` test positives, tamor against every other model: the AUC difference
    (means over seeds), its paired bootstrap interval over the test rows and the seeds (one bootstrap per cell for
    every model), and the verdict of :func:`~tamor.models.metrics.verdict`."""
    judged = []
    for (task, _, group, positives), row in auc.iterrows():
        if positives < JUDGED_POSITIVES or not np.isfinite(row["tamor"]):
            continue
        others = row.drop("tamor").dropna().sort_values(ascending=False)
        labels, fits = cell_predictions(task, group, ["tamor", *others.index], predictions, spec, test)
        boot = bootstrap_mean_aucs(labels, fits)
        for name, value in others.items():
            d = difference_interval(row["tamor"] - value, boot["tamor"], boot[name])
            judged.append({"task": task, "tier": group, "test pos.": positives, "against": name, "tamor": f"{row['tamor']:.4f}",
                           "other": f"{value:.4f}", "Δ": f"{d['diff']:+.4f}", "95% interval": f"[{d['low']:+.4f}, {d['high']:+.4f}]",
                           "verdict": VERDICTS[verdict(d["low"], d["high"])]})
    return pd.DataFrame(judged)


def draws(results: pd.DataFrame, models: list[str], k: int) -> pd.DataFrame:
    """In the cells with ≥ ``JUDGED_POSITIVES`` test positives, the share of draws of k seeds whose mean puts tamor at
    or above each other model, and our MMoE and tamor at or above themselves (A/A: two disjoint draws of the
    same model, where it takes 2k seeds): how likely one run of k seeds is to call a cell, and every cell at
    once, for tamor when the difference is the seeds' luck (:func:`seed_draws`). Empty without tamor."""
    judged = results[(results["positives"] >= JUDGED_POSITIVES) & (results["slice"] != "scenario")]
    judged = judged[judged.groupby(["task", "group"])["auc"].transform(lambda auc: auc.notna().all())]  # every fit scored
    seeds = judged.groupby("model")["seed"].nunique()
    pairs = [("tamor", m) for m in models if m != "tamor" and seeds.get(m, 0) >= k and seeds.get("tamor", 0) >= k]
    pairs += [(m, m) for m in ("mmoe", "tamor") if seeds.get(m, 0) >= 2 * k]
    if "tamor" not in models or not pairs:
        return pd.DataFrame()
    table = None
    for a, b in pairs:
        share = seed_draws(judged, a, b, k, decimals=4).set_index(["task", "group"])["share"]  # as the tables print them
        column = f"{a} ≥ {b}" + (" (A/A)" if a == b else "")
        table = share.rename(column).to_frame() if table is None else table.join(share.rename(column))
    return table.reset_index()


def cell_predictions(task: str, group: str, models: list[str], predictions: dict[str, np.ndarray], spec: FeatureSpec,
                     test: dict[str, Tensor]) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """One task × tier cell of the test split: its labels ``[n]`` and, per model, one ``[n]`` array per seed."""
    t = spec.task_names.index(task)
    rows = test["label_mask"][:, t].numpy() > 0
    if group != "all":
        rows &= test["tier"].numpy() == spec.tiers.index(group)
    return test["labels"][rows, t].numpy(), {m: [p[rows, t] for p in predictions[m]] for m in models}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a directory written by `tamor preprocess`")
    src.add_argument("--source", help="raw logs to preprocess first (with --schema)")
    src.add_argument("--synthetic", type=int, metavar="ROWS", help="generate and preprocess a synthetic world of this many rows")
    ap.add_argument("--heterogeneity", type=float, default=1.0,
                    help="the --synthetic world's tier_heterogeneity: 0 one shared tier response, 1 the world's own, 2 twice its deviations")
    ap.add_argument("--schema", default="synthetic")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=TAMOR_MODELS + PEERS, help="models, peers and variants name:key=value,...")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override `tamor train`'s recipe for every model, as `tamor train --set` does (e.g. distill=0 epochs=10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draw", type=int, default=3, metavar="K",
                    help="with more seeds than K: how often a draw of K seeds puts tamor at or above each model, per judged cell")
    ap.add_argument("--out", type=Path, default=Path("runs/peers"))
    ap.add_argument("--from-run", action="store_true",
                    help="fit nothing: summarise again the run already in --out (peers_runs.csv, predictions.npz) on its --data")
    args = ap.parse_args()
    if args.from_run and args.data is None:
        ap.error("--from-run reads the test split of --data: pass the data directory the run was fitted on")
    return args


def prepared(args: argparse.Namespace) -> Path:
    """``--data``, or the splits `tamor preprocess` makes of ``--source`` or a ``--synthetic`` world (Ray Data)."""
    if args.data is not None:
        return args.data
    from tamor.platform.preprocess import preprocess
    from tamor.platform.ray_env import init_ray
    from tamor.platform.schema import load_schema

    init_ray(num_cpus=2)
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    source = args.source
    if args.synthetic:
        from tamor.platform.generate import generate
        from tamor.platform.world import WorldConfig

        generate(WorldConfig(rows=args.synthetic, seed=0, tier_heterogeneity=args.heterogeneity), work / "synthetic")
        source, args.schema = str(work / "synthetic" / "logs"), "synthetic"
    preprocess(source, load_schema(args.schema), work / "data")
    return work / "data"


def report(args: argparse.Namespace, results: pd.DataFrame, predictions: dict[str, np.ndarray], spec: FeatureSpec,
           test: dict[str, Tensor]) -> list[str]:
    """``peers.md`` / ``peers.csv`` / ``draws.csv`` under ``--out``; returns the Markdown's parts."""
    tables, judged, times = summarise(results, args.models, predictions, spec, test)
    tables["auc"].to_csv(args.out / "peers.csv", index=False)
    if len(judged):
        judged.to_csv(args.out / "judged.csv", index=False)
    text = [f"# Peer benchmark: {spec.dataset}, {args.seeds} seeds (test AUC, mean ± std)\n", tables["auc"].to_markdown(index=False),
            "\n## Test log loss (mean ± std)\n", tables["logloss"].to_markdown(index=False),
            "\n## Expected calibration error (10 equal-mass bins; mean ± std; 0 is calibrated)\n", tables["ece"].to_markdown(index=False),
            "\n## The same without the calibration (a deep model's raw sigmoid)\n", tables["ece_raw"].to_markdown(index=False),
            "\n## Wall time per fit\n", times.round(1).to_markdown(),
            f"\n## tamor against every model, cells with ≥ {JUDGED_POSITIVES} test positives\n",
            "AUC difference (tamor − other, means over seeds) with its 95% paired bootstrap interval (1,000 resamples of the "
            "test rows, both models scored on the same rows, and of each model's seeds): an interval that holds 0 is a "
            "difference these rows and seeds cannot tell from none.\n",
            verdict_counts(judged).to_markdown() if len(judged) else "",
            judged.to_markdown(index=False, disable_numparse=True) if len(judged) else "none"]
    shares = draws(results, args.models, args.draw) if args.seeds > args.draw else pd.DataFrame()
    if len(shares):
        shares.to_csv(args.out / "draws.csv", index=False)
        text += [f"\n## Over every draw of {args.draw} of the {args.seeds} seeds, cells with ≥ {JUDGED_POSITIVES} test positives\n",
                 f"Share of the draws whose mean AUC over {args.draw} seeds, to four decimals as in the tables above, puts the "
                 "first model at or above the second (every cell: in all of them at once). An A/A column pits two disjoint draws "
                 "of one model against each other: what the seeds' luck alone gives a comparison judged on one draw.\n",
                 shares.to_markdown(index=False, floatfmt=".2f")]
    (args.out / "peers.md").write_text("\n".join(text) + "\n")
    return text


def verdict_counts(judged: pd.DataFrame) -> pd.DataFrame:
    """Per model tamor is judged against: how many cells tamor is ahead beyond the noise, level, behind beyond it."""
    counts = judged.groupby("against", sort=False)["verdict"].value_counts().unstack(fill_value=0)
    return counts.reindex(columns=list(VERDICTS.values()), fill_value=0)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = DataDir(prepared(args))
    spec = data.spec()
    test = load_split(data, "test", spec)
    if args.from_run:
        results, predictions = pd.read_csv(args.out / "peers_runs.csv"), dict(np.load(args.out / "predictions.npz"))
        args.models, args.seeds = list(dict.fromkeys(results["model"])), results["seed"].nunique()
        if any(p.shape[1:] != (len(test["tier"]), len(spec.task_names)) for p in predictions.values()):
            sys.exit(f"{args.out}'s predictions are not of {data.root}'s test split: pass the --data the run was fitted on")
    else:
        results, predictions = run(data, args)
        results.to_csv(args.out / "peers_runs.csv", index=False)
        np.savez_compressed(args.out / "predictions.npz", **predictions)  # [seeds, N, T] per model, the test split's row order
    start = time.perf_counter()
    print("\n".join(report(args, results, predictions, spec, test)))
    print(f"\nwrote {args.out / 'peers.md'} and peers.csv; summary in {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
