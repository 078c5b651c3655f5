"""The peer benchmark, side by side in one run: tamor's models, torch-rechub's MMoE and PLE, and a
scikit-learn HistGradientBoosting per task, on the same preprocessed splits with one protocol.

    pip install -e ".[bench]"                      # torch-rechub, pinned
    python bench/peers.py --source ../shared/data/census-income/census-income.test.gz --schema census_income --seeds 3
    python bench/peers.py --synthetic 200000 --seeds 3

The splits come from `tamor preprocess` (Ray Data): one encoder, the same features for every model
(the tier and scenario columns included). Every deep model is fitted by the same loop: AdamW, the same
learning rate and batch size, targets mixed with the out-of-fold tree teacher's (``--distill``), a fresh shuffle every epoch, early stopping on the mean validation AUC
over tasks with the best weights restored, the weights' moving average validated and tested (``--ema-decay``, as
`tamor train`; torch-rechub's models too: the same loop for every deep model); N seeds each. Test AUC and log loss per task × (overall,
each tier) are written as mean ± std (``peers.csv``, ``peers.md``) with the wall time of each fit, and
tamor's AUC difference to our MMoE and to every model ahead of it with a paired bootstrap interval over the
test rows and seeds; with more seeds than ``--draw`` K, how often a draw of K seeds puts tamor at or above each
model in each judged cell (``draws.csv``), beside an A/A draw of our MMoE against itself; ``predictions.npz`` keeps the test probabilities, and ``--from-run`` summarises a
finished run again without fitting (``--data <its data> --out <its directory> --from-run``).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from tamor.models.config import ModelConfig
from tamor.models.factory import build_model
from tamor.models.feature_spec import SIDES, FeatureSpec
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.models.loss import MultiTaskLoss
from tamor.models.metrics import evaluate_predictions, paired_auc_difference, seed_draws
from tamor.platform.data_dir import DataDir
from tamor.platform.teacher import feature_columns, features_of, has_teacher, new_tree
from tamor.platform.train import TrainConfig, weight_average

TAMOR_MODELS = ["shared_bottom", "mmoe", "ple", "per_tier_mmoe", "tamor"]
PEERS = ["rechub_mmoe", "rechub_ple", "hgb"]
ABLATIONS = {  # variants on the same splits and seeds, by --models
    "tamor_paper": {"name": "tamor", "shared_path": False},  # the paper's TAMOR: no shared path
    "tamor_undecayed": {"name": "tamor", "correction_decay": 0.0},  # the tier-aware part decays like the rest
    **{f"tamor_tau{t:g}": {"name": "tamor", "temperature": t} for t in (3.0, 10.0)},  # softer tier encoding (default τ 1)
    **{f"{m}_emb16": {"name": m, "embedding_dim": 16} for m in ("tamor", "mmoe")},  # wider embeddings (default 8)
    **{f"tamor_cdrop{int(p * 10)}": {"name": "tamor", "correction_dropout": p} for p in (0.3, 0.5)},  # drop the correction per row
    "tamor_nospecific": {"name": "tamor", "specific_experts": 0},  # no tier-specific experts: the tiers differ only by their gates
    **{f"{m}_wide": {"name": m, "expert_dims": [128, 64], "tower_dims": [64]} for m in ("tamor", "mmoe")},  # default [64, 32], [32]
    **{f"{m}_{n}": {"name": m, "numeric_embedding": n} for m in ("tamor", "mmoe") for n in ("periodic", "piecewise", "linear")},
}
# tamor_decay<d>: TAMOR whose tier-aware part decays by d (e.g. tamor_decay3, tamor_decay0.3; default 1)
# <model>_noema: that model validated and tested on its raw weights (ema_decay 0; the default averages them)
# <model>_ema: that model on its weights' moving average at 0.99 whatever --ema-decay says (the runs before it was the default)
# <model>_labels: that model trained on the labels alone (no tree teacher, distill 0)
MIN_POSITIVES = 50  # cells with fewer test positives are shown but not judged


def ablation(name: str) -> dict:
    """The model config fields of a model or variant name (``ABLATIONS``, ``tamor_decay<d>``, or a model)."""
    if m := re.fullmatch(r"tamor_decay(\d+(?:\.\d+)?)", name):
        return {"name": "tamor", "correction_decay": float(m.group(1))}
    return ABLATIONS.get(name, {"name": name})


# ------------------------------------------------------------------------------------------ data


def load_split(data: DataDir, split: str, spec: FeatureSpec, with_teacher: bool = False) -> dict[str, Tensor]:
    frame = pd.read_parquet(data.split(split), columns=batch_columns(spec, with_teacher=with_teacher))
    return batch_from_columns(spec, {c: frame[c].to_numpy() for c in frame.columns})


def rows(batch: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    return {k: v[idx] for k, v in batch.items()}


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


def predict(model: nn.Module, batch: dict[str, Tensor], tasks: list[str], size: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(batch["tier"]), size):
            logits = model(rows(batch, torch.arange(i, min(i + size, len(batch["tier"])))))
            out.append(torch.sigmoid(torch.stack([logits[t] for t in tasks], dim=1)).numpy())
    return np.concatenate(out)


def mean_auc(probs: np.ndarray, batch: dict[str, Tensor]) -> float:
    labels, mask = batch["labels"].numpy(), batch["label_mask"].numpy()
    aucs = [roc_auc_score(labels[mask[:, t] > 0, t], probs[mask[:, t] > 0, t]) for t in range(labels.shape[1])
            if len(np.unique(labels[mask[:, t] > 0, t])) == 2]
    return float(np.mean(aucs))


def fit_torch(make: Callable[[], nn.Module], spec: FeatureSpec, splits: dict, args, seed: int,
              ema_decay: float | None = None, distill: float | None = None) -> tuple[np.ndarray, int]:
    """AdamW, shuffled mini-batches, targets mixed with the tree teacher's by ``distill``, early stopping on the
    mean validation AUC; test probabilities of the best epoch (of the weights' moving average with an
    ``ema_decay``), as in `tamor train`; defaults ``args.ema_decay`` and ``args.distill``."""
    ema_decay = args.ema_decay if ema_decay is None else ema_decay
    torch.manual_seed(seed)
    model = make()
    loss_fn = MultiTaskLoss(spec, distill=args.distill if distill is None else distill,
                            tier_distill=getattr(args, "tier_distill", None) if distill is None else None)
    # `tamor train`'s optimizer: AdamW over the model's own parameter groups (TAMOR decays its correction more)
    groups = model.parameter_groups(args.weight_decay) if hasattr(model, "parameter_groups") else model.parameters()
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    average = weight_average(model, ema_decay)
    judged = average.module if average is not None else model  # `tamor train` validates and keeps the average
    train, n = splits["train"], len(splits["train"]["tier"])
    generator = torch.Generator().manual_seed(seed)
    best, best_state, stale, epochs = -1.0, None, 0, 0
    for _ in range(args.epochs):
        model.train()
        for idx in torch.randperm(n, generator=generator).split(args.batch_size):
            batch = rows(train, idx)
            total, _ = loss_fn(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if average is not None:
                average.update_parameters(model)
        epochs += 1
        score = mean_auc(predict(judged, splits["valid"], spec.task_names), splits["valid"])
        if score > best:
            best, best_state, stale = score, copy.deepcopy(judged.state_dict()), 0
        else:
            stale += 1
            if stale >= args.patience:
                break
    judged.load_state_dict(best_state)
    return predict(judged, splits["test"], spec.task_names), epochs


def tree_features(data: DataDir, spec: FeatureSpec) -> dict[str, np.ndarray]:
    """``{split: [N, F]}`` for train and test: the tree teacher's feature matrix (``features_of``), read once per run."""
    return {s: features_of(pd.read_parquet(data.split(s), columns=feature_columns(spec)), spec) for s in ("train", "test")}


def fit_hgb(spec: FeatureSpec, x: dict[str, np.ndarray], splits: dict, seed: int) -> tuple[np.ndarray, int]:
    """One default HistGradientBoostingClassifier per task: the tree teacher's model (``new_tree``) on the
    teacher's feature matrix ``x`` (:func:`tree_features`), fitted on the rows each task counts in."""
    x_train, x_test = x["train"], x["test"]
    train, loss_mask = splits["train"], MultiTaskLoss(spec).row_mask(splits["train"]).numpy()
    out = []
    for t in range(len(spec.task_names)):
        keep = loss_mask[:, t] > 0
        out.append(new_tree(spec, seed).fit(x_train[keep], train["labels"][keep, t].numpy()).predict_proba(x_test)[:, 1])
    return np.stack(out, axis=1), 0


# ------------------------------------------------------------------------------------------ the run


def run(data: DataDir, args) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every model × seed on the same splits: the metrics per fit, and each model's test probabilities
    ``[seeds, N, T]`` (for the paired intervals)."""
    spec = data.spec()
    distilling = args.distill > 0 or any(getattr(args, "tier_distill", {}).values())
    if distilling and not has_teacher(data.split("train"), spec):
        sys.exit(f"{data.root}'s train split has no teacher columns: preprocess it again, or pass --distill 0")
    splits = {s: load_split(data, s, spec, with_teacher=s == "train" and distilling) for s in ("train", "valid", "test")}
    test = splits["test"]
    x_tree = tree_features(data, spec) if "hgb" in args.models else None
    results, predictions = [], {name: [] for name in args.models}
    for seed in range(args.seeds):
        for name in args.models:
            start = time.perf_counter()
            base, ema = (name[:-6], 0.0) if name.endswith("_noema") else (name[:-4], 0.99) if name.endswith("_ema") else (name, None)
            base, distill = (base[:-7], 0.0) if base.endswith("_labels") else (base, None)
            if name == "hgb":
                probs, epochs = fit_hgb(spec, x_tree, splits, seed)
            elif base.startswith("rechub_"):
                probs, epochs = fit_torch(lambda k=base[7:]: RechubAdapter(k, spec), spec, splits, args, seed, ema, distill)
            else:
                config = ModelConfig(**ablation(base))
                probs, epochs = fit_torch(lambda c=config: build_model(c, spec), spec, splits, args, seed, ema, distill)
            seconds = time.perf_counter() - start
            metrics = evaluate_predictions(spec, probs, test["labels"].numpy(), test["label_mask"].numpy(), test["tier"].numpy(),
                                           test["scenario"].numpy())
            metrics = metrics[metrics["slice"] != "scenario"].assign(model=name, seed=seed, seconds=seconds, epochs=epochs)
            results.append(metrics)
            predictions[name].append(probs.astype(np.float32))
            overall = metrics[metrics["slice"] == "overall"].set_index("task")["auc"].round(4).to_dict()
            print(f"seed {seed} {name:14s} {seconds:6.1f} s {epochs:3d} epochs  test AUC {overall}", flush=True)
    return pd.concat(results, ignore_index=True), {name: np.stack(p) for name, p in predictions.items()}


def summarise(results: pd.DataFrame, models: list[str], predictions: dict[str, np.ndarray], spec: FeatureSpec,
              test: dict[str, Tensor]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Mean ± std tables of AUC and log loss; wall time per fit; and, in every cell with ≥ ``MIN_POSITIVES``
    test positives, tamor against our MMoE and against every model ahead of it: the AUC difference with its
    paired bootstrap interval over the test rows and the seeds (:func:`cell_difference`)."""
    cell = ["task", "slice", "group"]
    stats = results.groupby([*cell, "model"], sort=False).agg(
        auc=("auc", "mean"), auc_std=("auc", "std"), logloss=("logloss", "mean"), logloss_std=("logloss", "std"),
        positives=("positives", "first")).reset_index()
    stats["auc_text"] = [f"{m:.4f} ± {s:.4f}" if np.isfinite(m) else "–" for m, s in zip(stats["auc"], stats["auc_std"].fillna(0))]
    stats["logloss_text"] = [f"{m:.4f} ± {s:.4f}" if np.isfinite(m) else "–" for m, s in zip(stats["logloss"], stats["logloss_std"].fillna(0))]
    wide = {metric: stats.pivot_table(index=[*cell, "positives"], columns="model", values=f"{metric}_text", aggfunc="first", sort=False)[models]
            for metric in ("auc", "logloss")}
    times = results.groupby("model", sort=False).agg(seconds=("seconds", "mean"), epochs=("epochs", "mean")).loc[models]
    judged = []
    auc = stats.pivot_table(index=[*cell, "positives"], columns="model", values="auc", sort=False)
    if "tamor" in auc:
        for (task, _, group, positives), row in auc.iterrows():
            others = row.drop("tamor").dropna()
            against = others[(others > row["tamor"]) | (others.index == "mmoe")].sort_values(ascending=False)
            if positives < MIN_POSITIVES or not np.isfinite(row["tamor"]):
                continue
            for name, value in against.items():
                d = cell_difference(task, group, "tamor", name, predictions, spec, test)
                judged.append({"task": task, "tier": group, "test pos.": positives, "against": name, "tamor": f"{row['tamor']:.4f}",
                               "other": f"{value:.4f}", "Δ": f"{d['diff']:+.4f}", "95% interval": f"[{d['low']:+.4f}, {d['high']:+.4f}]",
                               "verdict": ("level within the noise" if d["low"] <= 0 <= d["high"]
                                           else "tamor ahead" if d["low"] > 0 else "tamor behind")})
    return wide["auc"].reset_index(), wide["logloss"].reset_index(), pd.DataFrame(judged), times


def draws(results: pd.DataFrame, models: list[str], k: int) -> pd.DataFrame:
    """In the cells with ≥ ``MIN_POSITIVES`` test positives, the share of draws of k seeds whose mean puts tamor at
    or above each other model, and our MMoE and tamor at or above themselves (A/A: two disjoint draws of the
    same model, where it takes 2k seeds): how likely one run of k seeds is to call a cell, and every cell at
    once, for tamor when the difference is the seeds' luck (:func:`seed_draws`). Empty without tamor."""
    judged = results[(results["positives"] >= MIN_POSITIVES) & (results["slice"] != "scenario")]
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


def cell_difference(task: str, group: str, a: str, b: str, predictions: dict[str, np.ndarray], spec: FeatureSpec,
                    test: dict[str, Tensor]) -> dict[str, float]:
    """Model ``a``'s AUC minus ``b``'s (means over seeds) on one task × tier cell of the test split, with its
    paired bootstrap interval."""
    t = spec.task_names.index(task)
    rows = test["label_mask"][:, t].numpy() > 0
    if group != "all":
        rows &= test["tier"].numpy() == spec.tiers.index(group)
    return paired_auc_difference(test["labels"][rows, t].numpy(), [p[rows, t] for p in predictions[a]],
                                 [p[rows, t] for p in predictions[b]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a directory written by `tamor preprocess`")
    src.add_argument("--source", help="raw logs to preprocess first (with --schema)")
    src.add_argument("--synthetic", type=int, metavar="ROWS", help="generate and preprocess a synthetic world of this many rows")
    ap.add_argument("--schema", default="synthetic")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=TAMOR_MODELS + PEERS)
    recipe = TrainConfig()  # `tamor train`'s defaults are the protocol
    ap.add_argument("--epochs", type=int, default=recipe.epochs)
    ap.add_argument("--patience", type=int, default=recipe.patience)
    ap.add_argument("--batch-size", type=int, default=recipe.batch_size)
    ap.add_argument("--lr", type=float, default=recipe.lr)
    ap.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    ap.add_argument("--ema-decay", type=float, default=recipe.ema_decay)
    ap.add_argument("--distill", type=float, default=recipe.distill, help="α of the tree teacher (0: labels only)")
    ap.add_argument("--tier-distill", nargs="+", default=[], metavar="TIER=α", help="α for the rows of a tier, e.g. low=1.0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draw", type=int, default=3, metavar="K",
                    help="with more seeds than K: how often a draw of K seeds puts tamor at or above each model, per judged cell")
    ap.add_argument("--out", type=Path, default=Path("runs/peers"))
    ap.add_argument("--from-run", action="store_true",
                    help="fit nothing: summarise again the run already in --out (peers_runs.csv, predictions.npz) on its --data")
    args = ap.parse_args()
    args.tier_distill = {k: float(v) for k, v in (item.split("=", 1) for item in args.tier_distill)}
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_run and args.data is None:
        sys.exit("--from-run reads the test split of --data: pass the data directory the run was fitted on")
    if args.data is None:
        from tamor.platform.preprocess import preprocess
        from tamor.platform.ray_env import init_ray
        from tamor.platform.schema import load_schema

        init_ray(num_cpus=2)
        work = Path(tempfile.mkdtemp(prefix="peers-"))
        source = args.source
        if args.synthetic:
            from tamor.platform.generate import generate
            from tamor.platform.world import WorldConfig

            generate(WorldConfig(rows=args.synthetic, seed=0), work / "synthetic")
            source, args.schema = str(work / "synthetic" / "logs"), "synthetic"
        preprocess(source, load_schema(args.schema), work / "data")
        args.data = work / "data"
    data = DataDir(args.data)
    spec = data.spec()
    test = load_split(data, "test", spec)
    if args.from_run:
        results, predictions = pd.read_csv(args.out / "peers_runs.csv"), dict(np.load(args.out / "predictions.npz"))
        args.models, args.seeds = list(dict.fromkeys(results["model"])), results["seed"].nunique()
        if any(p.shape[1:] != (len(test["tier"]), len(spec.task_names)) for p in predictions.values()):
            sys.exit(f"{args.out}'s predictions are not of {args.data}'s test split: pass the --data the run was fitted on")
    else:
        results, predictions = run(data, args)
        results.to_csv(args.out / "peers_runs.csv", index=False)
        np.savez_compressed(args.out / "predictions.npz", **predictions)  # [seeds, N, T] per model, the test split's row order
    auc, logloss, judged, times = summarise(results, args.models, predictions, spec, test)
    auc.to_csv(args.out / "peers.csv", index=False)
    text = [f"# Peer benchmark: {spec.dataset}, {args.seeds} seeds (test AUC, mean ± std)\n", auc.to_markdown(index=False),
            "\n## Test log loss (mean ± std)\n", logloss.to_markdown(index=False),
            "\n## Wall time per fit\n", times.round(1).to_markdown(),
            f"\n## tamor against our MMoE and every model ahead of it, cells with ≥ {MIN_POSITIVES} test positives\n",
            "AUC difference (tamor − other, means over seeds) with its 95% paired bootstrap interval (1,000 resamples of the "
            "test rows, both models scored on the same rows, and of each model's seeds): an interval that holds 0 is a "
            "difference these rows and seeds cannot tell from none.\n",
            judged.to_markdown(index=False, disable_numparse=True) if len(judged) else "none"]
    shares = draws(results, args.models, args.draw) if args.seeds > args.draw else pd.DataFrame()
    if len(shares):
        shares.to_csv(args.out / "draws.csv", index=False)
        text += [f"\n## Over every draw of {args.draw} of the {args.seeds} seeds, cells with ≥ {MIN_POSITIVES} test positives\n",
                 f"Share of the draws whose mean AUC over {args.draw} seeds, to four decimals as in the tables above, puts the "
                 "first model at or above the second (every cell: in all of them at once). An A/A column pits two disjoint draws of one model against each "
                 "other: what the seeds' luck alone gives a comparison judged on one draw.\n",
                 shares.to_markdown(index=False, floatfmt=".2f")]
    (args.out / "peers.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    print(f"\nwrote {args.out / 'peers.md'} and peers.csv", file=sys.stderr)


if __name__ == "__main__":
    main()
