"""The `tamor` CLI: every command has --help, and bad input is a clear error (exit 2), not a traceback."""

import pytest
from typer.testing import CliRunner

from tamor.cli.common import default_of
from tamor.cli.main import app

runner = CliRunner()
COMMANDS = ["generate", "preprocess", "train", "evaluate", "tune", "serve", "demo", "report", "simulate", "pipeline",
            "registry list", "registry show", "registry promote", "features load"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_shows_each_default_from_the_config_that_holds_it():
    from tamor.platform.train_config import TrainConfig

    # the options stay None (so a config file and --set apply beneath them); --help shows the config's defaults
    result = runner.invoke(app, ["train", "--help"], terminal_width=400)
    defaults = TrainConfig()
    for field in ("epochs", "lr", "ema_decay", "distill", "patience", "storage_path"):
        assert f"[default: ({getattr(defaults, field)})" in result.output, field
    assert default_of(TrainConfig, "model.name") == defaults.model.name


@pytest.mark.parametrize(
    "args, message",
    [
        (["preprocess", "--schema", "no_such_schema"], "no shipped schema"),
        (["train", "--data", "/nonexistent"], "no preprocessed data"),
        (["train", "--model", "gpt"], "'gpt' is not one of"),
        (["train", "--set", "epochs=0"], "invalid training config: epochs"),
        (["train", "--set", "epochs"], "--set takes key=value"),
        (["tune", "--data", "/nonexistent"], "no preprocessed data"),
        (["evaluate", "--checkpoint", "/nonexistent"], "no checkpoint"),
        (["evaluate", "--checkpoint", "/nonexistent", "--device", "cuda:99"], "'cuda:99': this machine has"),
        (["evaluate", "--checkpoint", "/nonexistent", "--device", "gpu"], "device 'gpu'"),
        (["report", "/nonexistent"], "no run directory"),
        (["pipeline", "--set", "gate.min_positives=0"], "invalid pipeline config: gate.min_positives"),
        (["pipeline", "--set", "train.placement_strategy=ANYWHERE"], "invalid pipeline config: train.placement_strategy"),
        (["pipeline", "--data", "/nonexistent"], "no preprocessed data"),
        (["registry", "show", "v0042", "--registry", "{tmp}"], "no versions"),
    ],
)
def test_bad_input_is_a_clear_error(args, message, tmp_path):
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_step_prints_one_line_with_its_figure_or_where_the_log_is(tmp_path):
    import io
    import json

    from rich.console import Console

    from tamor.cli.common import Steps, epoch_watch

    out = io.StringIO()
    step = Steps(Console(file=out, width=200), out=tmp_path, log=tmp_path / "driver.log")
    with step("train tamor") as s:
        s["figure"] = "best val_auc_mean 0.8123"
    with pytest.raises(ValueError), step("evaluate"):
        raise ValueError("boom")
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("✓ train tamor: best val_auc_mean 0.8123 (")
    assert lines[1].startswith("✗ evaluate failed after") and str(tmp_path / "driver.log") in lines[1]
    assert list(json.loads((tmp_path / "timings.json").read_text())) == ["train tamor"]
    # the watcher a training step shows while it runs: the last finished epoch
    watch = epoch_watch(tmp_path, epochs=30)
    assert watch() is None
    (tmp_path / "epochs.jsonl").write_text('{"epoch": 0, "val_auc_mean": 0.7}\n{"epoch": 1, "val_auc_mean": 0.75}\n')
    assert watch() == "epoch 2/30, val_auc_mean 0.7500"
