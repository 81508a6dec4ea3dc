"""make_trainable and the replay trainable against a stand-in Tune session (in process):
what they report, the checkpoints they hand over, and how they resume from one."""

import json
import shutil
from pathlib import Path

import pytest
from ray import tune

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records import RECORD_COLUMNS
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.tune import cached_records, make_replay_trainable, make_trainable, replay_key
from tune_batchdyn.tune.replay import recorded_trajectories, trial_runner

NQM = dict(dataset="nqm", model="nqm", epochs=6, lr=0.5,
           dataset_options={"samples_per_epoch": 6400, "dim": 1000, "bins": 20})


class Session:
    """Stands in for Ray's: keeps the reports and copies each checkpoint, as Ray does."""

    def __init__(self, folder: Path, resume_from: Path | None = None):
        self.folder = folder
        self.reports: list[dict] = []
        self.checkpoints: list[Path] = []
        self.resume_from = resume_from

    def report(self, metrics, checkpoint=None):
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            kept = self.folder / f"checkpoint_{len(self.reports):03d}"
            shutil.copytree(checkpoint.path, kept)
            self.checkpoints.append(kept)

    def get_checkpoint(self):
        return None if self.resume_from is None else tune.Checkpoint.from_directory(
            str(self.resume_from))


@pytest.fixture
def session(tmp_path, monkeypatch):
    def start(resume_from=None):
        fake = Session(tmp_path / f"session{len(list(tmp_path.iterdir()))}", resume_from)
        fake.folder.mkdir()
        monkeypatch.setattr(tune, "report", fake.report)
        monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
        return fake

    return start


def test_trainable_reports_each_epoch_with_its_budget_fraction_and_a_checkpoint(session):
    fake = session()
    make_trainable(**NQM)({"batch_size": 64, "seed": 1})
    straight = run_trial(TrialConfig(**NQM, batch_size=64, seed=1))
    assert [r["epoch"] for r in fake.reports] == list(range(1, 7))
    assert [r["budget_fraction"] for r in fake.reports] == pytest.approx(
        [e / 6 for e in range(1, 7)])
    assert set(RECORD_COLUMNS) <= set(fake.reports[0])
    assert [r["test_error"] for r in fake.reports] == straight["test_error"].tolist()
    assert [json.loads((c / "reported.json").read_text())["epochs"]
            for c in fake.checkpoints] == list(range(1, 7))


def test_trainable_resumes_after_the_checkpointed_epochs(session):
    first = session()
    make_trainable(**NQM)({"batch_size": 64})
    resumed = session(resume_from=first.checkpoints[2])  # as if stopped after epoch 3
    make_trainable(**NQM)({"batch_size": 64})
    assert [r["epoch"] for r in resumed.reports] == [4, 5, 6]
    assert [r["test_error"] for r in resumed.reports] == [
        r["test_error"] for r in first.reports[3:]]


def test_trainable_checks_its_defaults_and_the_trial_config(session):
    session()
    with pytest.raises(ConfigError, match="unknown TrialConfig field"):
        make_trainable(colour="red")
    with pytest.raises(ConfigError, match="batch_size=0"):
        make_trainable(**NQM)({"batch_size": 0})


def test_replay_plays_the_recorded_rows_and_runs_what_is_missing(session, tmp_path):
    runner = trial_runner(**NQM)
    recorded = runner({"batch_size": 64, "seed": 0}).assign(trial_id="b64")
    trainable = make_replay_trainable(recorded, runner=runner, cache_dir=tmp_path / "cache")
    fake = session()
    trainable({"strategy": "fixed", "lr": 0.5, "batch_size": 64, "seed": 0})
    assert [r["val_error"] for r in fake.reports] == recorded["val_error"].tolist()
    assert [r["budget_fraction"] for r in fake.reports] == recorded["budget_fraction"].tolist()
    # a schedule nobody recorded: run for real, kept in the cache for the next run
    fake = session()
    trainable({"strategy": "[32,32,64,64,128,128]", "lr": 0.5, "batch_size": 32, "seed": 0})
    straight = run_trial(TrialConfig(**NQM, batch_size=32, strategy="[32,32,64,64,128,128]"))
    assert [r["batch_size"] for r in fake.reports] == [32, 32, 64, 64, 128, 128]
    assert [r["test_error"] for r in fake.reports] == straight["test_error"].tolist()
    cached = cached_records(tmp_path / "cache")
    assert cached["trial_id"].nunique() == 1 and len(cached) == 6


def test_replay_keys_are_canonical_and_a_missing_trial_is_an_error(session):
    assert replay_key({"strategy": "[32,64,128,256,512]", "lr": 0.1, "batch_size": 32}) == (
        "s32-to-512", 0.1, 32, 0)
    table = trial_runner(**NQM)({"batch_size": 64}).assign(trial_id="x")
    assert list(recorded_trajectories(table)) == [("fixed", 0.5, 64, 0)]
    session()
    with pytest.raises(ConfigError, match="no recorded trajectory for strategy='fixed'"):
        make_replay_trainable(table)({"lr": 0.5, "batch_size": 128})


def test_replay_resumes_after_the_reported_epochs(session):
    table = trial_runner(**NQM)({"batch_size": 64}).assign(trial_id="x")
    trainable = make_replay_trainable(table)
    first = session()
    trainable({"lr": 0.5, "batch_size": 64})
    resumed = session(resume_from=first.checkpoints[1])
    trainable({"lr": 0.5, "batch_size": 64})
    assert [r["epoch"] for r in resumed.reports] == [3, 4, 5, 6]
    assert resumed.reports == first.reports[2:]
