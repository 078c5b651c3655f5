"""The model registry: versions, latest / best / aliases, atomic exports."""

import pytest
import torch

from helpers import make_spec
from tamor.models.config import ModelConfig
from tamor.models.factory import build_model, load_model, save_model
from tamor.platform import registry as registry_module
from tamor.platform.registry import Registry, RegistryError


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(build_model(ModelConfig(embedding_dim=4, expert_dims=[8], tower_dims=[4]), make_spec()), path)
    return path


def test_versions_latest_best_and_aliases(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="no versions"):
        reg.resolve("latest")
    v1 = reg.export(model_file, {"val_auc_mean": 0.80}, metric="val_auc_mean", source={"run": "a"})
    v2 = reg.export(model_file, {"val_auc_mean": 0.75}, metric="val_auc_mean", source={"run": "b"})
    assert (v1.name, v2.name) == ("v0001", "v0002")
    assert reg.resolve("latest").name == "v0002" and reg.resolve("best").name == "v0001"
    assert reg.resolve("1").name == "v0001"
    reg.promote("best", "production")
    assert reg.resolve("production").name == "v0001"
    assert reg.resolve("v0002").meta["source"] == {"run": "b"}
    with pytest.raises(RegistryError, match="known: latest, best, production, v0001, v0002"):
        reg.resolve("v0009")
    with pytest.raises(RegistryError):
        reg.promote("v0001", "latest")


def test_an_exported_version_reloads_and_scores(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"m": 1.0}, metric="m")
    model = load_model(reg.local_model_file("latest"))
    original = load_model(model_file)
    assert model.config == original.config
    for (k, a), b in zip(model.state_dict().items(), original.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_a_crash_mid_export_leaves_latest_intact_and_no_half_version(tmp_path, model_file, monkeypatch):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"m": 0.5}, metric="m")

    def crash(self, tmp, final):
        raise OSError("disk vanished mid-export")

    monkeypatch.setattr(registry_module.Registry, "_publish", crash)
    with pytest.raises(OSError, match="mid-export"):
        reg.export(model_file, {"m": 0.9}, metric="m")
    assert [v.name for v in reg.versions()] == ["v0001"]
    assert reg.resolve("latest").name == "v0001" and reg.resolve("best").name == "v0001"
    assert load_model(reg.local_model_file("latest")) is not None
    monkeypatch.undo()
    assert reg.export(model_file, {"m": 0.9}, metric="m").name == "v0002"  # the next export goes through


def test_a_file_uri_registry_works_like_a_path(tmp_path, model_file):
    reg = Registry(f"file://{tmp_path / 'uri-reg'}")
    reg.export(model_file, {"m": 1.0}, metric="m")
    assert Registry(tmp_path / "uri-reg").resolve("latest").name == "v0001"
