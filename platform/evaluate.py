"""`tamor evaluate`: AUC and log loss per task (overall, per tier, per scenario) on a split, and the
paper's table — two checkpoints' AUC per task per user tier with the relative lift — as Markdown,
CSV and a PNG chart.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch

from tamor.models.errors import TamorError
from tamor.models.factory import load_model
from tamor.models.feature_spec import FeatureSpec
from tamor.models.inputs import batch_columns, batch_from_columns
from tamor.models.metrics import paper_table
from tamor.models.score_histograms import ScoreHistograms
from tamor.platform.data_dir import DataDir
from tamor.platform.gate import Paired
from tamor.platform.plots import save, subplots
from tamor.platform.preprocess import encode_batch, map_in_slices, read_written
from tamor.platform.schema import LogSchema
from tamor.platform.step import batch_predictions
from tamor.platform.train import SpecCollate, read_split

ADD_ROWS = 1 << 18  # predictions held at once, then added to the histograms (about 15 MB with five tasks)


def evaluate_checkpoint(checkpoint: str | Path, data_dir: str | Path, split: str = "test", batch_size: int = 8192,
                        device: str = "cpu") -> pd.DataFrame:
    """Metrics of a checkpoint on a split (:func:`evaluate_model`), scored on ``device`` (``cuda``: this machine's GPU)."""
    scoring_device(device)
    model = load_model(checkpoint)
    spec = FeatureSpec.load(data_dir)
    if spec.task_names != model.tasks:
        raise TamorError(f"checkpoint tasks {model.tasks} do not match the data's {spec.task_names}")
    return evaluate_model(model, read_split(data_dir, split, spec), spec, batch_size, device)


def scoring_device(device: str) -> torch.device:
    """``device`` as torch's, or :class:`TamorError` when this machine has no such device (a typo, no GPU here)."""
    try:
        found = torch.device(device)
    except RuntimeError as e:
        raise TamorError(f"device {device!r}: {e}") from None
    if found.type == "cuda" and (found.index or 0) >= torch.cuda.device_count():
        raise TamorError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices (torch {torch.__version__})")
    return found


def evaluate_model(model: torch.nn.Module, rows: ray.data.Dataset, spec: FeatureSpec, batch_size: int = 8192,
                   device: str = "cpu") -> pd.DataFrame:
    """Metrics of ``model`` on model-ready rows (see :func:`read_split`), streamed through Ray Data: each batch's
    probabilities are added to per-cell score histograms and let go, so memory does not grow with the rows. The
    model scores in this process, on ``device``."""
    histograms = ScoreHistograms(spec)
    batches = rows.iter_torch_batches(batch_size=batch_size, collate_fn=SpecCollate(spec))
    predictions = batch_predictions(model.to(device), batches, torch.device(device))
    while chunk := list(itertools.islice(predictions, max(1, ADD_ROWS // batch_size))):  # each add touches every bin
        histograms.add(**{k: np.concatenate([c[k] for c in chunk]) for k in ("probs", "labels", "label_mask", "tier", "scenario")})
    return histograms.table()


def paired_test_predictions(new_file: str | Path, current_file: str | Path | None, data_dir: str | Path,
                            schema: LogSchema, batch_size: int = 8192) -> Paired:
    """Both models' probabilities on the same test rows, for the promotion gate: the raw test rows stream through
    Ray Data once, each batch encoded by each model's own encoder (as serving would; an earlier model may have
    been fitted on other logs) and scored by both, so every row is paired whatever the vocabularies."""
    data = DataDir(data_dir)
    models = {"new": load_model(new_file), **({"current": load_model(current_file)} if current_file else {})}
    new = models["new"]
    for name, model in models.items():
        if model.encoder is None or model.tasks != new.tasks or model.spec.tiers != new.spec.tiers:
            raise TamorError(f"the {name} model carries no encoder, or its tasks {model.tasks} and tiers {model.spec.tiers} are "
                             f"not the new model's: not comparable")
    if not data.raw_test.exists():
        raise TamorError(f"{data.root} keeps no raw test rows (preprocessed by an older tamor): preprocess the logs again")
    cuts = tuple(json.loads(data.stats_file.read_text())["cuts"])
    scored = map_in_slices(read_written(data.raw_test), _score_both, {"schema": schema, "cuts": cuts, "models": models}, rows=batch_size)
    parts = list(scored.iter_batches(batch_format="numpy", batch_size=None))
    if not parts:
        raise TamorError(f"{data.raw_test} holds no test rows to judge the new model by")
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Paired(new.tasks, new.spec.tiers, joined["labels"], joined["label_mask"], joined["tier"], joined["probs_new"],
                  joined.get("probs_current"))


def _score_both(batch: pd.DataFrame, schema: LogSchema, cuts: tuple[float, float], models: dict) -> dict[str, np.ndarray]:
    """Raw rows ``[B]`` → ``probs_<name> [B, T]`` per model, and the labels, masks ``[B, T]`` and tier ``[B]``."""
    out: dict[str, np.ndarray] = {}
    for name, model in models.items():
        cols = encode_batch(batch, schema, model.encoder, cuts)
        inputs = batch_from_columns(model.spec, {c: cols[c].to_numpy() for c in batch_columns(model.spec)})
        with torch.no_grad():
            out[f"probs_{name}"] = model.eval().predict_proba(inputs).numpy()
        if name == "new":
            out.update(labels=inputs["labels"].numpy(), label_mask=inputs["label_mask"].numpy(), tier=inputs["tier"].numpy())
    return out


def plot_table(table: pd.DataFrame, name_a: str, name_b: str, path: Path) -> None:
    """Grouped bars of AUC per task and tier for both models, lift annotated."""
    tasks, tiers = list(dict.fromkeys(table["task"])), list(dict.fromkeys(table["tier"]))
    fig, axes = subplots(1, len(tiers), figsize=(4.5 * len(tiers), 3.8), sharey=True)
    for ax, tier in zip(np.atleast_1d(axes), tiers):
        rows = table[table["tier"] == tier].set_index("task").reindex(tasks)
        x = np.arange(len(tasks))
        ax.bar(x - 0.2, rows[f"auc_{name_a}"], 0.4, label=name_a)
        ax.bar(x + 0.2, rows[f"auc_{name_b}"], 0.4, label=name_b)
        for xi, (lift, top) in enumerate(zip(rows["lift_pct"], rows[[f"auc_{name_a}", f"auc_{name_b}"]].max(axis=1))):
            if np.isfinite(lift):
                ax.text(xi, top + 0.01, f"{lift:+.1f}%", ha="center", fontsize=8)
        ax.set_title(f"tier: {tier}")
        ax.set_xticks(x, tasks, rotation=30, ha="right")
        ax.set_ylim(0.5, 1.0)
    np.atleast_1d(axes)[0].set_ylabel("AUC (test)")
    np.atleast_1d(axes)[0].legend(loc="lower left")
    save(fig, path, dpi=120)


def write_comparison(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str, out: Path) -> pd.DataFrame:
    """The paper's table as ``paper_table.md``, ``.csv`` and ``.png`` under ``out``; returns it."""
    out.mkdir(parents=True, exist_ok=True)
    table = paper_table(a, b, name_a, name_b)
    table.to_csv(out / "paper_table.csv", index=False)
    (out / "paper_table.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot_table(table, name_a, name_b, out / "paper_table.png")
    return table
