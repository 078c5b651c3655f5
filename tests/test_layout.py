"""The repository root must never shadow the standard library's `platform` (docs/architecture.md, layout)."""

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
