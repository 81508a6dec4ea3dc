"""enqueue_once and the beacons and grid enqueued through it: a configuration trains once per
study when workers enqueue it at the same instant (the race made deterministic: workers that
all read the storage before any of them wrote), a failed trial's configuration is enqueued
again and a finished one never, and a killed worker's trial is failed and requeued by the next
worker, also from the command line when nothing else is queued."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.optuna import (
    BEACON_ATTR,
    DUPLICATE_ATTR,
    KEY_ATTR,
    decisions_line,
    enqueue_beacon,
    enqueue_once,
    make_objective,
    open_study,
)
from tune_batchdyn.records import read_records, record_attr_name

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState

NQM = {"dataset": "nqm", "model": "nqm", "epochs": 3,
       "dataset_options": {"samples_per_epoch": 2000, "dim": 100, "bins": 10}}
SPACE = {"batch_size": [32, 128], "lr": [0.1, 0.4]}
BEACON = {"batch_size": 128, "lr": 0.1}


def _storage(tmp_path: Path, form: str) -> str | None:
    return {"memory": None, "sqlite": f"sqlite:///{tmp_path / 'study.db'}",
            "journal": str(tmp_path / "study.journal")}[form]


def _open(storage: str | None) -> optuna.Study:
    return open_study(storage, "s" if storage else None, pruner=optuna.pruners.NopPruner(),
                      heartbeat_interval=None)


@contextlib.contextmanager
def read_before_any_wrote(study: optuna.Study) -> Iterator[None]:
    """Inside, every read of the study's trials answers what the storage held on entry: the
    workers all checked "does the study hold it?" before any of them inserted (the race of the
    review's t2_race_threads.py, with the unlucky interleaving every time)."""
    snapshot = study.get_trials(deepcopy=True)

    def get_trials(self, deepcopy=True, states=None):  # Study.get_trials' signature
        return [t for t in snapshot if states is None or t.state in states]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optuna.Study, "get_trials", get_trials)
        yield


@pytest.fixture
def trained(monkeypatch) -> list[tuple[int, float]]:
    """(batch_size, lr) of every trial the objective trains."""
    runs: list[tuple[int, float]] = []
    module = sys.modules["tune_batchdyn.optuna.objective"]
    real = module.run_trial

    def counting(config, reporter=None):
        runs.append((config.batch_size, config.lr))
        return real(config, reporter)

    monkeypatch.setattr(module, "run_trial", counting)
    return runs


@pytest.mark.parametrize("form", ["memory", "sqlite", "journal"])
def test_a_beacon_two_workers_enqueue_at_once_trains_once(tmp_path, form, trained):
    study = _open(_storage(tmp_path, form))
    with read_before_any_wrote(study):
        enqueue_beacon(study, BEACON)  # worker A
        enqueue_beacon(study, BEACON)  # worker B: neither saw the other's trial
    assert len(study.get_trials(states=(State.WAITING,))) == 2  # the race did happen
    objective = make_objective(SPACE, **NQM)
    first, second = study.ask(), study.ask()  # each worker takes one, both running
    with pytest.raises(optuna.TrialPruned):
        objective(second)  # the later one is skipped before training...
    study.tell(second, state=State.PRUNED)
    study.tell(first, objective(first))  # ...the lowest-numbered runs the beacon
    assert trained == [(128, 0.1)]
    runner, duplicate = study.get_trials()
    assert (runner.state, runner.last_step, runner.user_attrs[BEACON_ATTR]) == (
        State.COMPLETE, 3, True)
    assert duplicate.state == State.PRUNED
    assert duplicate.user_attrs[DUPLICATE_ATTR] == runner.number == 0
    assert not any(name.startswith("record/") for name in duplicate.user_attrs)
    assert decisions_line(study) == "decisions: pruned=0 enqueued=0"  # a skip is no decision


def test_the_runner_failing_after_its_duplicate_was_skipped_frees_the_configuration(trained):
    """The configuration is never lost: the rule counts neither failed trials nor skipped
    duplicates, so the key is free again and the next enqueue runs it."""
    study = _open(None)
    with read_before_any_wrote(study):
        for _ in range(2):
            enqueue_once(study, BEACON)
    objective = make_objective(SPACE, **NQM)
    first, second = study.ask(), study.ask()
    with pytest.raises(optuna.TrialPruned):
        objective(second)
    study.tell(second, state=State.PRUNED)
    study.tell(first, state=State.FAIL)  # its worker died
    assert enqueue_once(study, BEACON) is True
    study.optimize(objective, n_trials=1)
    assert [t.state for t in study.trials] == [State.FAIL, State.PRUNED, State.COMPLETE]
    assert trained == [(128, 0.1)]


@pytest.mark.parametrize("form", ["memory", "sqlite", "journal"])
def test_a_failed_beacon_is_enqueued_again_a_finished_one_never(tmp_path, form):
    study = _open(_storage(tmp_path, form))
    beacons = [{"batch_size": b, "lr": 0.1} for b in (32, 128, 512)]
    for params in beacons:
        enqueue_beacon(study, params)
    for state in (State.FAIL, State.COMPLETE, State.PRUNED):
        trial = study.ask()
        study.tell(trial, 0.5 if state == State.COMPLETE else None, state=state)
    for params in beacons:  # a restart, or another worker, enqueues the beacons again
        enqueue_beacon(study, params)
    (waiting,) = study.get_trials(states=(State.WAITING,))
    assert waiting.system_attrs["fixed_params"] == beacons[0]
    assert waiting.user_attrs == {BEACON_ATTR: True, KEY_ATTR: '{"batch_size": 32, "lr": 0.1}'}


def _killed_worker_trial(url: str, name: str, beat: bool = True) -> int:
    """A worker takes the next queued trial, reports an epoch, its heartbeat beats (unless
    ``beat`` is False: killed before the first beat), and it is killed: an hour later, say.
    Returns the trial's number."""
    study = optuna.load_study(study_name=name, storage=url)
    trial = study.ask()
    trial.set_user_attr(record_attr_name(1), {"epoch": 1, "val_error": 0.5})
    trial.report(0.5, 1)
    if beat:
        study._storage.record_heartbeat(trial._trial_id)
    _an_hour_passes(url)
    return trial.number


def _an_hour_passes(url: str) -> None:
    """Every heartbeat in the database an hour older."""
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")


def test_the_next_worker_fails_a_killed_workers_trial_and_enqueues_it_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    enqueue_beacon(open_study(url, "s"), BEACON)
    killed = _killed_worker_trial(url, "s")
    study = open_study(url, "s")  # the next worker joins (default grace period: 120 s)
    failed, requeued = study.get_trials()
    assert (failed.number, failed.state, requeued.state) == (killed, State.FAIL, State.WAITING)
    assert requeued.system_attrs["fixed_params"] == BEACON
    # enqueued as it was, without the killed trial's partial record
    assert requeued.user_attrs == {BEACON_ATTR: True, KEY_ATTR: failed.user_attrs[KEY_ATTR]}


def test_a_trial_killed_before_its_first_heartbeat_goes_stale_in_turn(tmp_path):
    """Optuna never fails a running trial without a heartbeat (seen in the review's kill test
    rerun: a worker killed while it started the next trial); the next worker gives it one."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    enqueue_beacon(open_study(url, "s"), BEACON)
    killed = _killed_worker_trial(url, "s", beat=False)
    assert [t.state for t in open_study(url, "s").get_trials()] == [State.RUNNING]
    _an_hour_passes(url)
    failed, requeued = open_study(url, "s").get_trials()
    assert (failed.number, failed.state, requeued.state) == (killed, State.FAIL, State.WAITING)


SPACE_FILE = """
[search]
metric = "val_error"
mode = "min"
beacons = [32, 128]
beacon_lr = 0.1

[fixed]
dataset = "nqm"
model = "nqm"
strategy = "fixed"
epochs = 2
dataset_options = { dim = 100, bins = 10, samples_per_epoch = 2000 }

[params]
batch_size = { grid = [32, 128] }
lr = { grid = [0.1] }
"""


def test_sweep_runs_a_killed_workers_grid_point_when_nothing_else_is_queued(tmp_path, capsys):
    """The review's kill test: the queue is empty, the killed trial RUNNING; the next sweep
    fails it and runs its grid point (before: "nothing to run", RUNNING for good)."""
    space = tmp_path / "two.toml"
    space.write_text(SPACE_FILE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["sweep", "--space", str(space), "--backend", "optuna", "--storage", url,
            "--pruner", "none"]
    assert main([*argv, "--budget", "2"]) == 0  # one trial (2 epochs), then the budget stops
    killed = _killed_worker_trial(url, "two")  # the second grid point's worker is killed
    assert main([*argv, "--out", str(tmp_path / "sweep.csv")]) == 0
    out = capsys.readouterr().out
    assert "nothing to run" not in out
    records = read_records(tmp_path / "sweep.csv")  # the failed trial's partial run left out
    assert sorted(records.groupby("trial_id")["epoch"].max().items()) == [("0", 2), ("2", 2)]
    trials = optuna.load_study(study_name="two", storage=url).get_trials()
    assert [(t.number, t.state) for t in trials] == [
        (0, State.COMPLETE), (killed, State.FAIL), (2, State.COMPLETE)]
    assert trials[2].params == trials[1].system_attrs["fixed_params"] == {
        "batch_size": 128, "lr": 0.1}
    assert trials[2].last_step == 2 and trials[2].user_attrs[BEACON_ATTR] is True
    # a third run trains nothing again
    assert main(argv) == 0
    assert "already holds 2 finished trials: nothing to run" in capsys.readouterr().out


def test_a_grid_sweeps_trial_drawn_from_an_empty_queue_is_skipped_untrained():
    """Two workers: one takes the last queued trial between the other's QueueDrained check
    and its next trial, so the sampler draws one; the grid sweep skips it and stops."""
    from tune_batchdyn.cli._sweep_optuna import queued_only
    from tune_batchdyn.optuna import UNQUEUED_ATTR, count_decisions, enqueue_once

    study = optuna.create_study()
    enqueue_once(study, {"lr": 0.1})
    trained = []

    def objective(trial: optuna.trial.Trial) -> float:
        trained.append(trial.suggest_float("lr", 0.01, 1.0, log=True))
        return 0.5

    study.optimize(queued_only(objective), n_trials=5)
    first, drawn = study.trials
    assert trained == [0.1] and first.state == optuna.trial.TrialState.COMPLETE
    assert drawn.state == optuna.trial.TrialState.PRUNED and drawn.user_attrs[UNQUEUED_ATTR]
    assert count_decisions(study).pruned == 0  # never trained: not a pruning decision
    # a study of an older version queued its grid by study.enqueue_trial: still the grid's
    older = optuna.create_study()
    older.enqueue_trial({"lr": 0.2})
    older.optimize(queued_only(objective), n_trials=5)
    assert trained == [0.1, 0.2] and older.trials[0].state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize(("params", "message"), [
    ({"bs": 64, "lr": 0.1}, "hold no batch_size"),
    ({"batch_size": 64, "lr": 0.1, "strategy": "s64-to-512"}, "strategy='s64-to-512' is not"),
    ({"batch_size": 0, "lr": 0.1}, "batch_size=0 is not accepted"),
    ({"batch_size": 64, "lr": "0.1"}, "lr='0.1' is not accepted"),
])
def test_enqueue_beacon_refuses_what_is_no_fixed_batch_trial(params, message):
    from tune_batchdyn.errors import ConfigError
    from tune_batchdyn.optuna import enqueue_beacon

    study = optuna.create_study()
    with pytest.raises(ConfigError, match=message):
        enqueue_beacon(study, params)
    assert not study.trials
