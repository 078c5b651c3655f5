"""The Ranker loads only models that encode features as its feature store does."""

import pytest

from helpers import TINY
from tamor.models.factory import build_model, save_model
from tamor.platform.data_dir import DataDir
from tamor.serve.ranker import ModelRefused, Ranker


def ranker_for(data: DataDir):
    return Ranker.func_or_class(data.encoder().fingerprint)  # the deployment's class, outside Serve


def test_a_model_trained_with_another_encoder_is_refused_with_a_message(synthetic_data, census_data, tmp_path):
    census, synthetic = DataDir(census_data), DataDir(synthetic_data)
    save_model(build_model(TINY, census.spec(), census.encoder()), tmp_path / "census.pt")
    ranker = ranker_for(synthetic)
    with pytest.raises(ModelRefused, match=r"trained with encoder \w+ \(census_income\)"):
        ranker.reconfigure({"checkpoint": str(tmp_path / "census.pt")})
    assert ranker.model is None  # nothing was swapped in


def test_a_model_without_an_encoder_is_refused_and_its_own_data_is_accepted(synthetic_data, tmp_path):
    synthetic = DataDir(synthetic_data)
    save_model(build_model(TINY, synthetic.spec()), tmp_path / "bare.pt")
    save_model(build_model(TINY, synthetic.spec(), synthetic.encoder()), tmp_path / "own.pt")
    ranker = ranker_for(synthetic)
    with pytest.raises(ModelRefused, match="carries no encoder"):
        ranker.reconfigure({"checkpoint": str(tmp_path / "bare.pt")})
    ranker.reconfigure({"checkpoint": str(tmp_path / "own.pt")})
    assert ranker.model_version()["encoder"] == synthetic.encoder().fingerprint


def test_a_failed_swap_keeps_the_serving_model_and_says_why(synthetic_data, tmp_path):
    synthetic = DataDir(synthetic_data)
    save_model(build_model(TINY, synthetic.spec(), synthetic.encoder()), tmp_path / "good.pt")
    (tmp_path / "corrupt.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:1000])  # truncated
    ranker = ranker_for(synthetic)
    ranker.reconfigure({"checkpoint": str(tmp_path / "good.pt")})
    serving = ranker.model
    for bad in ({"checkpoint": str(tmp_path / "corrupt.pt")}, {"checkpoint": str(tmp_path / "missing.pt")},
                {"registry": str(tmp_path / "empty-registry"), "ref": "latest"}):
        ranker.reconfigure(bad)
        assert ranker.model is serving and ranker.version.endswith("good.pt")
        assert ranker.model_version()["last_error"].startswith("kept checkpoint:")
    ranker.reconfigure({"checkpoint": str(tmp_path / "good.pt")})
    assert ranker.model_version()["last_error"] is None


def test_a_model_with_non_finite_outputs_is_refused(synthetic_data, tmp_path):
    import torch

    synthetic = DataDir(synthetic_data)
    model = build_model(TINY, synthetic.spec(), synthetic.encoder())
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    save_model(model, tmp_path / "nan.pt")
    with pytest.raises(ModelRefused, match="non-finite"):
        ranker_for(synthetic).reconfigure({"checkpoint": str(tmp_path / "nan.pt")})
