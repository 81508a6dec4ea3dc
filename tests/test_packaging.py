"""pyproject.toml ships every package and the search spaces; the loader finds them in the
installed (wheel) layout, where ``searchspaces/`` lies inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
SOURCE_NAMES = sorted(p.stem for p in (ROOT / "searchspaces").glob("*.toml"))


def test_the_package_list_is_the_tree_plus_the_spaces():
    in_tree = {".".join(init.parent.relative_to(ROOT).parts)
               for init in (ROOT / "tune_batchdyn").rglob("__init__.py")}
    assert sorted(SETUPTOOLS["packages"]) == sorted(in_tree | {"tune_batchdyn.searchspaces"})


def test_the_spaces_folder_is_mapped_with_its_toml_files():
    assert SETUPTOOLS["package-dir"] == {"tune_batchdyn.searchspaces": "searchspaces"}
    assert "*.toml" in SETUPTOOLS["package-data"]["tune_batchdyn.searchspaces"]


def test_the_loader_reads_the_spaces_inside_an_installed_package(tmp_path):
    """The wheel's layout, built by hand: tune_batchdyn/ with searchspaces/ inside, no
    top-level searchspaces/ beside it; imported first on the path, from outside the checkout."""
    installed = tmp_path / "site"
    shutil.copytree(ROOT / "tune_batchdyn", installed / "tune_batchdyn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "searchspaces", installed / "tune_batchdyn" / "searchspaces",
                    ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("from tune_batchdyn.space.files import SEARCHSPACES_DIR, resolve_space_path, "
             "shipped_spaces\nprint(SEARCHSPACES_DIR)\nprint(','.join(sorted(shipped_spaces())))\n"
             "print(resolve_space_path('digits_mlp_smoke'))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=True,
                          env={"PYTHONPATH": str(installed), "PATH": ""})
    folder, names, smoke = done.stdout.splitlines()
    inside = installed / "tune_batchdyn" / "searchspaces"
    assert Path(folder) == inside
    assert names.split(",") == SOURCE_NAMES
    assert Path(smoke) == inside / "digits_mlp_smoke.toml"


def test_a_trial_imports_neither_scikit_learn_nor_scipy():
    """Every trial imports ``train`` (and through the strategies ``predict.schedules``); the
    predictor's dependencies cost 1.5 s of its start and are not needed there."""
    probe = ("import sys, tune_batchdyn.train, tune_batchdyn.strategies; "
             "print(sorted({'sklearn', 'scipy', 'ray', 'optuna'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
