"""The model registry: versions, latest / best / aliases, atomic exports."""

import pytest
import torch

from helpers import TINY, make_spec, promote_many
from tamor.models.factory import build_model, load_model, save_model
from tamor.platform import registry as registry_module
from tamor.platform.registry import Registry, RegistryError


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(build_model(TINY, make_spec()), path)
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


@pytest.mark.parametrize("alias", ["3", "", " production", "production\n", "x" * 5000, "best", "v0002", "a/b"])
def test_an_alias_that_could_misresolve_is_refused(tmp_path, model_file, alias):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"val_auc_mean": 0.8}, metric="val_auc_mean")
    with pytest.raises(RegistryError, match="cannot be an alias name"):
        reg.promote("v0001", alias)
    assert reg.aliases() == {}


def test_a_non_finite_metric_is_refused_at_export_and_never_becomes_best(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"val_auc_mean": 0.7}, metric="val_auc_mean")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(RegistryError, match="needs a finite metric"):
            reg.export(model_file, {"val_auc_mean": bad}, metric="val_auc_mean")
    assert [v.name for v in reg.versions()] == ["v0001"] and reg.resolve("best").name == "v0001"


def test_a_killed_exports_staging_directory_is_listed_then_removed_by_the_next_export(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"val_auc_mean": 0.7}, metric="val_auc_mean")
    litter = tmp_path / "reg" / ".incoming-v0002-deadbeef"
    litter.mkdir()
    (litter / "model.pt").write_bytes(b"half")
    assert reg.stale_incoming() == [str(litter)]
    reg.export(model_file, {"val_auc_mean": 0.8}, metric="val_auc_mean")
    assert not litter.exists() and reg.stale_incoming() == [] and reg.resolve("latest").name == "v0002"


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


def test_concurrent_promotes_and_exports_lose_nothing(tmp_path, model_file):
    import multiprocessing as mp

    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"m": 0.5}, metric="m")
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=promote_many, args=(str(tmp_path / "reg"), alias, 40)) for alias in ("a", "b", "c")]
    workers += [ctx.Process(target=Registry(tmp_path / "reg").export, args=(model_file, {"m": 0.6}, "m")) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    assert reg.aliases() == {"a": "v0001", "b": "v0001", "c": "v0001"}  # no read-modify-write lost an alias
    assert [v.name for v in reg.versions()] == ["v0001", "v0002", "v0003", "v0004"]
    assert not [p.name for p in (tmp_path / "reg").iterdir() if p.name.startswith(".incoming")]


def test_a_corrupt_version_is_named_skipped_by_latest_and_breaks_nothing_else(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    for m in (0.5, 0.6, 0.7, 0.8):
        reg.export(model_file, {"m": m}, metric="m")
    model = tmp_path / "reg" / "v0004" / "model.pt"
    model.write_bytes(model.read_bytes()[:100])  # a truncated upload
    (tmp_path / "reg" / "v0003" / "version.json").write_text('{"version": "v00')  # a truncated metadata write
    listed = {v.name: v.problem for v in reg.versions(include_corrupt=True)}
    assert listed["v0001"] is None and listed["v0002"] is None
    assert "truncated" in listed["v0004"] and "corrupt" in listed["v0003"]
    assert reg.resolve("latest").name == "v0002" and reg.resolve("best").name == "v0002"
    with pytest.raises(RegistryError, match="v0004 is corrupt"):
        reg.resolve("v0004")
    # same size, other bytes: caught by the sha256 when the model is fetched
    good = tmp_path / "reg" / "v0002" / "model.pt"
    data = bytearray(good.read_bytes())
    data[-10] ^= 0xFF
    good.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256"):
        reg.local_model_file("v0002")
    assert reg.export(model_file, {"m": 0.9}, metric="m").name == "v0005"  # numbers are never reused


def test_a_corrupt_aliases_file_breaks_only_the_aliases(tmp_path, model_file):
    reg = Registry(tmp_path / "reg")
    reg.export(model_file, {"m": 0.5}, metric="m")
    reg.promote("v0001", "production")
    (tmp_path / "reg" / "aliases.json").write_text('{"produc')
    assert reg.resolve("v0001").name == reg.resolve("latest").name == "v0001"
    with pytest.raises(RegistryError, match="aliases.json is corrupt"):
        reg.resolve("production")
    reg.promote("v0001", "production")  # a promote rewrites it whole
    assert reg.resolve("production").name == "v0001"
