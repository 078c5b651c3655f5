"""The repository's layout: the root never shadows the standard library's `platform` (docs/architecture.md, layout),
and what a Serve replica imports as it starts."""

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


def test_a_serve_replicas_module_starts_without_scikit_learn_or_scipy():
    # every replica imports it on start (and on restart after a failure): they are imported where a calibration is
    # fitted or a bootstrap drawn, never only to apply a model
    code = "import sys, tamor.serve.deployments; print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
