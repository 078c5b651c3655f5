"""Probe: does a deep model plus the tree teacher beat the tree alone? Two ways of combining them, one seed.

- **offset** ("hybrid"): the model's logit is added to the tree's; train rows get the out-of-fold teacher's
  logit already in the train split (no row sees its own label), valid and test rows the mean of the fold
  teachers' logits (refitted by preprocess's own ``fit_teachers``). The network learns the residual.
- **blend**: the plain model (``bench/peers.py``'s loop) and the fold teachers' mean, logits averaged
  with the tree's weight ``w`` after training.

Prints test AUC per task × (overall, each tier) for the fold-mean tree, the offset model, the plain model
and the blends. Not part of the platform: serving computes neither (it would need the trees), so neither is a
model of the benchmark; this says whether building one is worth it.

    python bench/tree_blend.py --data runs/census-kd/data --model tamor --seed 0 --distill 0
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from scipy.special import expit, logit
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import fit_torch, load_split  # noqa: E402  (the benchmark's loop and splits)

from tamor.models.config import ModelConfig  # noqa: E402
from tamor.models.factory import build_model  # noqa: E402
from tamor.models.metrics import evaluate_predictions  # noqa: E402
from tamor.platform.data_dir import DataDir  # noqa: E402
from tamor.platform.ray_env import init_ray  # noqa: E402
from tamor.platform.teacher import feature_columns, features_of, fit_teachers  # noqa: E402
from tamor.platform.train import TrainConfig  # noqa: E402

EPS = 1e-6


class TreeOffset(nn.Module):
    """``{task: logit [B]}`` = the inner model's logit + ``batch["offset"] [B, T]`` (the tree's logit)."""

    def __init__(self, inner: nn.Module, tasks: list[str]):
        super().__init__()
        self.inner, self.tasks = inner, tasks

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.inner(batch)
        return {t: out[t] + batch["offset"][:, i] for i, t in enumerate(self.tasks)}

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        return self.inner.parameter_groups(weight_decay)


def fold_mean_logits(data: DataDir, spec, splits: dict, seed: int) -> dict[str, np.ndarray]:
    """``{split: [N, T]}`` for valid and test: the mean logit of the fold teachers, fitted by preprocess's own
    ``fit_teachers`` (on Ray Data's read of the train split)."""
    init_ray(num_cpus=1, verbose=False)
    teachers = fit_teachers(ray.data.read_parquet(str(data.split("train"))), len(splits["train"]["tier"]), spec, seed)
    out = {}
    for s in ("valid", "test"):
        x = features_of(pd.read_parquet(data.split(s), columns=feature_columns(spec)), spec)
        out[s] = np.stack([np.mean([logit(np.clip(np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1], EPS, 1 - EPS))
                                    for m in teachers[t]], axis=0) for t in spec.task_names], axis=1)
    return out


def cells(spec, test: dict[str, Tensor], probs: np.ndarray) -> pd.Series:
    """Test AUC per task × (overall, each tier): the benchmark's ``evaluate_predictions`` cells."""
    m = evaluate_predictions(spec, probs, test["labels"].numpy(), test["label_mask"].numpy(), test["tier"].numpy(), test["scenario"].numpy())
    m = m[m["slice"] != "scenario"]
    return pd.Series(m["auc"].to_numpy(), index=m["task"] + " " + m["group"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a directory written by `tamor preprocess` (with the teacher)")
    ap.add_argument("--model", default="tamor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distill", type=float, default=TrainConfig().distill)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = TrainConfig()
    loop = types.SimpleNamespace(epochs=recipe.epochs, patience=recipe.patience, batch_size=recipe.batch_size, lr=recipe.lr,
                                 weight_decay=recipe.weight_decay, ema_decay=recipe.ema_decay, distill=args.distill)
    data = DataDir(args.data)
    spec = data.spec()
    splits = {s: load_split(data, s, spec, with_teacher=s == "train") for s in ("train", "valid", "test")}
    tree = fold_mean_logits(data, spec, splits, args.seed)
    splits["train"]["offset"] = torch.tensor(logit(np.clip(splits["train"]["teacher"].numpy(), EPS, 1 - EPS)), dtype=torch.float32)
    for s in tree:
        splits[s]["offset"] = torch.tensor(tree[s], dtype=torch.float32)
    config = ModelConfig(name=args.model)
    rows = {"tree, fold mean": expit(tree["test"])}
    rows[f"{args.model} + tree offset"], _ = fit_torch(lambda: TreeOffset(build_model(config, spec), spec.task_names), spec, splits, loop, args.seed)
    plain, _ = fit_torch(lambda: build_model(config, spec), spec, splits, loop, args.seed)
    rows[args.model] = plain
    for w in (0.3, 0.5, 0.7):
        rows[f"blend, tree weight {w}"] = expit((1 - w) * logit(np.clip(plain, EPS, 1 - EPS)) + w * tree["test"])
    table = pd.DataFrame({name: cells(spec, splits["test"], p) for name, p in rows.items()}).T.round(4)
    print(f"{spec.dataset}, seed {args.seed}, distill {args.distill}: test AUC\n{table.to_markdown()}")


if __name__ == "__main__":
    main()
