"""The `tamor` CLI: every command has --help, and bad input is a clear error (exit 2), not a traceback."""

import pytest
from typer.testing import CliRunner

from tamor.cli.main import app

runner = CliRunner()
COMMANDS = ["generate", "preprocess", "train", "evaluate", "tune", "serve", "demo", "report", "simulate",
            "registry list", "registry show", "registry promote", "features load"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


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
        (["report", "/nonexistent"], "no run directory"),
        (["registry", "show", "v0042", "--registry", "{tmp}"], "no versions"),
    ],
)
def test_bad_input_is_a_clear_error(args, message, tmp_path):
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
