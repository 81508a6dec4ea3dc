"""The examples refuse bad arguments as the command line does: one line on stderr naming the
flag, exit status 2, before any work (nothing printed, trained or written). Each case is one
subprocess that stops at its check (the imports take most of its seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for no GPU")


def refused(tmp_path: Path, example: str, *argv: str) -> str:
    """Run ``example`` in ``tmp_path``; check the refusal's form and return its line."""
    done = subprocess.run([sys.executable, str(EXAMPLES / example), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"{example}: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(("plot", "says"), [("x.txt", ".png"), ("/no/such/folder/x.png",
                                                                 "folder does not exist")])
def test_nqm_plot_path_refused_before_the_curves(tmp_path, plot, says):
    line = refused(tmp_path, "nqm_critical_batch.py", "--smoke", "--plot", plot)
    assert "--plot" in line and says in line
    assert list(tmp_path.iterdir()) == []


def test_optuna_trials_below_one_refused(tmp_path):
    line = refused(tmp_path, "optuna_pruner.py", "--smoke", "--trials", "0")  # was: 6 trials
    assert "--trials" in line and "integer >= 1" in line


def test_optuna_bad_storage_refused(tmp_path):
    line = refused(tmp_path, "optuna_pruner.py", "--smoke", "--storage", "bad.db")
    assert "sqlite:///bad.db" in line
    assert list(tmp_path.iterdir()) == []


@NO_GPU
def test_optuna_cuda_without_a_gpu_refused(tmp_path):
    line = refused(tmp_path, "optuna_pruner.py", "--smoke", "--device", "cuda",
                   "--storage", f"sqlite:///{tmp_path / 'study.db'}")
    assert "--device cuda" in line and "'cpu'" in line
    assert list(tmp_path.iterdir()) == []  # the study was not even created


def test_own_model_bad_storage_refused(tmp_path):
    line = refused(tmp_path, "own_model.py", "--smoke", "--storage", "bad.db")
    assert "sqlite:///bad.db" in line


@pytest.mark.parametrize(("argv", "says"), [(["--batch-size", "0"], "batch_size=0"),
                                            (["--dataset", "nqm", "--model", "nqm"],
                                             "--dataset nqm")])
def test_strategies_compare_bad_settings_refused(tmp_path, argv, says):
    assert says in refused(tmp_path, "strategies_compare.py", "--smoke", *argv)


def test_tune_run_refuses_a_folder_that_holds_an_experiment(tmp_path):
    experiment = tmp_path / "results" / "digits-tune-run"
    experiment.mkdir(parents=True)
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    line = refused(tmp_path, "tune_run_scheduler.py", "--smoke", "--name", "digits-tune-run",
                   "--storage-path", str(tmp_path / "results"))
    assert "holds an experiment already" in line and "--name" in line
    assert [p.name for p in experiment.iterdir()] == ["experiment_state-2026-01-01_00-00-00.json"]


def test_tuner_refuses_a_new_run_over_an_experiment_and_a_resume_of_none(tmp_path):
    experiment = tmp_path / "results" / "digits-tuner"
    experiment.mkdir(parents=True)
    line = refused(tmp_path, "tuner_api.py", "--smoke", "--resume",
                   "--storage-path", str(tmp_path / "results"))
    assert "--resume needs the --name of the experiment to continue" in line
    line = refused(tmp_path, "tuner_api.py", "--smoke", "--resume", "--name", "digits-tuner",
                   "--storage-path", str(tmp_path / "results"))
    assert "--resume" in line and "no experiment" in line
    (experiment / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    line = refused(tmp_path, "tuner_api.py", "--smoke", "--name", "digits-tuner",
                   "--storage-path", str(tmp_path / "results"))
    assert "holds an experiment already: pass --resume" in line
    assert [p.name for p in experiment.iterdir()] == ["tuner.pkl"]


@NO_GPU
def test_ray_examples_refuse_resources_no_trial_could_get(tmp_path):
    line = refused(tmp_path, "tune_run_scheduler.py", "--smoke", "--gpus-per-trial", "1",
                   "--storage-path", str(tmp_path))
    assert "--gpus-per-trial 1" in line and "no CUDA GPU" in line
    line = refused(tmp_path, "tuner_api.py", "--smoke", "--cpus-per-trial", "0",
                   "--storage-path", str(tmp_path))
    assert "--cpus-per-trial 0" in line
