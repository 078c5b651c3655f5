"""Every model: one interface, learns a planted signal, round-trips through save/load."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from helpers import make_spec, planted_columns
from tamor.models.config import ModelConfig
from tamor.models.errors import TamorError
from tamor.models.factory import MODELS, build_model, load_model, save_model
from tamor.models.inputs import batch_from_columns
from tamor.models.loss import MultiTaskLoss

SMALL = dict(embedding_dim=4, expert_dims=[16], tower_dims=[8], bias_dim=4, num_experts=3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_returns_one_logit_per_task_and_row(name, spec, batch):
    model = build_model(ModelConfig(name=name, **SMALL), spec)
    out = model(batch)
    assert list(out) == spec.task_names
    assert all(v.shape == (64,) for v in out.values())
    assert model.predict_proba(batch).shape == (64, 5)
    reps = model.representations(batch)
    assert all(r.shape[0] == 64 and r.dim() == 2 for r in reps.values())


def test_tamor_exposes_tier_aware_and_agnostic_representations_encodings_and_gates(spec, batch):
    model = build_model(ModelConfig(**SMALL), spec)
    model(batch)
    assert set(model.representations(batch)) == {"tier_aware", "tier_agnostic"}
    enc = model.encoding_weights()
    assert enc["user"].shape == (3, 3) and enc["item"].shape == (4, 4)
    gates = model.gate_distributions()
    assert any(k.startswith("user/") for k in gates) and any(k.startswith("item/") for k in gates)


def test_soft_encoding_at_tiny_temperature_reproduces_one_hot(spec, batch):
    torch.manual_seed(0)
    soft = build_model(ModelConfig(encoding="soft", temperature=1e-4, **SMALL), spec).eval()
    one_hot = build_model(ModelConfig(encoding="one_hot", **SMALL), spec).eval()
    missing, unexpected = one_hot.load_state_dict(soft.state_dict(), strict=False)
    assert not missing and all("encoding.logits" in k for k in unexpected)
    for task, logit in soft(batch).items():
        torch.testing.assert_close(logit, one_hot(batch)[task])


def test_user_bias_tower_is_item_agnostic_and_user_level_tasks_read_items_through_the_shared_path(spec, batch):
    model = build_model(ModelConfig(**SMALL), spec).eval()
    before_b, before_hh = model.user_bias(batch), model(batch)["high_holding"]
    perturbed = dict(batch, cat_item=(batch["cat_item"] + 7) % 30, num_item=batch["num_item"] + 3.0)
    torch.testing.assert_close(model.user_bias(perturbed), before_b)  # b: the paper's item-agnostic user bias
    assert not torch.allclose(model(perturbed)["high_holding"], before_hh)  # the shared MMoE reads every input
    assert not torch.allclose(model(perturbed)["click"], model(batch)["click"])  # items do matter to clicks
    paper = build_model(ModelConfig(shared_path=False, **SMALL), spec).eval()  # the paper's form: item-agnostic
    torch.testing.assert_close(paper(perturbed)["high_holding"], paper(batch)["high_holding"])


def test_task_masked_for_a_tier_gets_no_gradient_from_its_rows():
    spec = make_spec({"large_invest": ["low", "high"]})  # not an objective for new users
    cols = planted_columns(spec, 64, seed=2)
    cols["tier"][:] = 0  # every row is a new user
    batch = batch_from_columns(spec, cols)
    model = build_model(ModelConfig(**SMALL), spec)
    total, per_task = MultiTaskLoss(spec)(model(batch), batch)
    total.backward()
    tower = model.towers.towers["large_invest"]
    assert per_task["large_invest"] == 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in tower.parameters())
    assert any(torch.count_nonzero(p.grad) > 0 for p in model.towers.towers["click"].parameters())


def test_missing_labels_give_no_loss(spec):
    cols = planted_columns(spec, 32, seed=3)
    batch = batch_from_columns(spec, cols)
    model = build_model(ModelConfig(**SMALL), spec)
    loss = MultiTaskLoss(spec, {"click": 2.0})
    _, full = loss(model(batch), batch)
    batch["label_mask"][:, 0] = 0
    total, masked = loss(model(batch), batch)
    assert masked["click"] == 0 and full["click"] > 0
    torch.testing.assert_close(total, sum(masked.values()))
    with pytest.raises(TamorError, match="unknown tasks"):
        MultiTaskLoss(spec, {"clicks": 1.0})


def test_distillation_mixes_the_teachers_probability_into_the_target(spec):
    cols = planted_columns(spec, 32, seed=4)
    logits = {t: torch.randn(32) for t in spec.task_names}
    labels_only = MultiTaskLoss(spec)(logits, batch_from_columns(spec, cols))[0]
    cols.update({f"teacher_{t}": np.full(32, 0.3, np.float32) for t in spec.task_names})
    batch = batch_from_columns(spec, cols)
    assert batch["teacher"].shape == (32, len(spec.task_names))
    torch.testing.assert_close(MultiTaskLoss(spec, distill=0.0)(logits, batch)[0], labels_only)  # α 0: the teacher is ignored
    half = MultiTaskLoss(spec, distill=0.5)(logits, batch)[0]
    teacher_only = MultiTaskLoss(spec, distill=1.0)(logits, batch)[0]
    # BCE is linear in its target: α 0.5 is the mean of the label-only and teacher-only losses
    torch.testing.assert_close(half, (labels_only + teacher_only) / 2)
    assert not torch.isclose(teacher_only, labels_only)
    with pytest.raises(TamorError, match="distill"):
        MultiTaskLoss(spec, distill=1.5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_learns_a_planted_signal(name, spec):
    torch.manual_seed(0)
    train = batch_from_columns(spec, planted_columns(spec, 4096, seed=10))
    test = batch_from_columns(spec, planted_columns(spec, 2048, seed=11))
    model = build_model(ModelConfig(name=name, **SMALL), spec)
    loss = MultiTaskLoss(spec)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(150):
        idx = torch.randint(0, 4096, (512,))
        mini = {k: v[idx] for k, v in train.items()}
        opt.zero_grad()
        loss(model(mini), mini)[0].backward()
        opt.step()
    probs = model.eval().predict_proba(test)
    auc = roc_auc_score(test["labels"][:, 0].numpy(), probs[:, 0].numpy())
    assert auc > 0.75, f"{name} reached click AUC {auc:.3f}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip_gives_identical_outputs(name, spec, batch, tmp_path):
    model = build_model(ModelConfig(name=name, **SMALL), spec).eval()
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config == model.config and loaded.spec == model.spec
    for task, logit in model(batch).items():
        torch.testing.assert_close(loaded(batch)[task], logit)


def test_loading_a_foreign_file_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(TamorError, match="not a tamor model file"):
        load_model(tmp_path / "other.pt")


def train_steps(model, spec, batch, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """A few full-batch steps of the multi-task loss."""
    for _ in range(steps):
        total, _ = MultiTaskLoss(spec)(model(batch), batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()


def test_tamor_starts_as_its_shared_path_and_learns_a_tier_aware_correction(spec, batch):
    model = build_model(ModelConfig(**SMALL), spec)
    other_tier = dict(batch, tier=(batch["tier"] + 1) % len(spec.tiers))
    model.eval()
    for task, logit in model(batch).items():  # at initialisation the tier-aware correction is zero
        torch.testing.assert_close(logit, model(other_tier)[task])
    model.train()
    train_steps(model, spec, batch, torch.optim.Adam(model.parameters(), lr=0.01), steps=5)
    model.eval()
    assert not torch.allclose(model(batch)["click"], model(other_tier)["click"])  # and then it learns one
    paper = build_model(ModelConfig(shared_path=False, **SMALL), spec).eval()
    assert paper.shared is None and not torch.allclose(paper(batch)["click"], paper(other_tier)["click"])


def test_tamor_decays_only_its_tier_aware_correction_and_so_keeps_it_small(spec, batch):
    model = build_model(ModelConfig(correction_decay=2.0, **SMALL), spec)
    rest, correction = model.parameter_groups(weight_decay=0.0)
    assert (rest["weight_decay"], correction["weight_decay"]) == (0.0, 2.0)
    assert len(rest["params"]) + len(correction["params"]) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith(("inputs.", "shared.", "shared_towers.")) for p in rest["params"])
    assert any(names[id(p)].startswith("user_ple.") for p in correction["params"])
    assert len(build_model(ModelConfig(**SMALL), spec).parameter_groups(0.0)) == 2  # decayed by default
    assert len(build_model(ModelConfig(correction_decay=0.0, **SMALL), spec).parameter_groups(0.0)) == 1
    assert len(build_model(ModelConfig(shared_path=False, **SMALL), spec).parameter_groups(0.0)) == 1  # the paper's form

    def tier_gap(decay: float) -> float:  # how far the logits move when only the tier changes, after training
        torch.manual_seed(0)
        m = build_model(ModelConfig(correction_decay=decay, **SMALL), spec)
        train_steps(m, spec, batch, torch.optim.AdamW(m.parameter_groups(0.0), lr=0.01), steps=30)
        m.eval()
        other_tier = dict(batch, tier=(batch["tier"] + 1) % len(spec.tiers))
        with torch.no_grad():
            return float((m(batch)["click"] - m(other_tier)["click"]).abs().mean())

    assert tier_gap(decay=5.0) < 0.2 * tier_gap(decay=0.0)
