"""The repository's layout: the root never shadows the standard library's `platform` (docs/architecture.md, layout),
and what a Serve replica, the CLI and the registry import as they start."""

import subprocess
import sys

from helpers import REPO

FOLDERS = ("platform", "models", "tuning", "serve", "cli")


def test_subpackage_folders_have_no_root_init():
    for folder in FOLDERS:
        assert not (REPO / folder / "__init__.py").exists(), f"{folder}/__init__.py shadows imports from the root"


def test_stdlib_platform_and_ray_import_from_the_repository_root():
    code = (
        "import platform, sysconfig, ray, tamor.platform.schema;"
        "assert platform.__file__.startswith(sysconfig.get_paths()['stdlib']), platform.__file__;"
        "print(platform.system(), ray.__version__)"
    )
    # cwd on sys.path first, as under `python -m`, pytest and Ray job working directories
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "Linux"


def test_serve_replicas_and_the_cli_start_without_what_they_do_not_run():
    # every replica imports its module on start (and on restart after a failure): scikit-learn and SciPy are imported
    # where a calibration is fitted or a bootstrap drawn, torch only by the Ranker, which runs the model; the CLI
    # (`tamor --help`, `tamor registry list`) and the registry's readers import neither until a command needs them
    light = ["scipy", "sklearn", "torch"]
    for module, absent in (("tamor.serve.deployments", light), ("tamor.serve.ranker", ["scipy", "sklearn"]),
                           ("tamor.cli.main", light), ("tamor.platform.registry", light)):
        code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({absent})))"
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]", (module, done.stdout)
