"""The Optuna sweep runs what Ray runs for a space (the review's spaces, on the NQM): every
grid point once per ``num_samples`` repeat, ``choice`` and range fields sampled per trial, each
(point, repeat) enqueued once per study however many workers or restarts enqueue it, and the
header says how many trials that is."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tune_batchdyn.cli import main
from tune_batchdyn.cli._sweep_optuna import grid_queue, held_fixed, is_beacon
from tune_batchdyn.optuna import (
    BEACON_ATTR,
    DUPLICATE_ATTR,
    KEY_ATTR,
    enqueue_beacon,
    enqueue_once,
    skip_duplicate,
)
from tune_batchdyn.records import REPEAT_ATTR
from tune_batchdyn.space import parse_space, read_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState

FIXED = """
[fixed]
dataset = "nqm"
model = "nqm"
epochs = 2
dataset_options = { dim = 100, bins = 10, samples_per_epoch = 2000 }
"""
GRID_PLUS_RANGE = FIXED + """
[params]
batch_size = { grid = [32, 64, 128, 256] }
lr = { loguniform = [0.05, 0.2] }
"""
CHOICE_ONLY = FIXED + """
batch_size = 64
[params]
lr = { choice = [0.05, 0.1, 0.2] }
"""
GRID_NUM_SAMPLES = "[search]\nnum_samples = 2\n" + FIXED + """
lr = 0.1
[params]
batch_size = { grid = [32, 128] }
"""


def _sweep(tmp_path: Path, text: str, *extra: str) -> list[optuna.trial.FrozenTrial]:
    """Run ``tune-batchdyn sweep --backend optuna --pruner none`` on the space ``text``: the
    study's trials."""
    path = tmp_path / "space.toml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["sweep", "--space", str(path), "--backend", "optuna", "--storage", url,
                 "--pruner", "none", *extra]) == 0
    return optuna.load_study(study_name="space", storage=url).get_trials()


def _configs(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    return [t.user_attrs["config"] for t in trials]


def test_a_grid_with_a_range_runs_every_grid_value_once_with_the_range_sampled(tmp_path, capsys):
    """Before: TPE sampled the grid field too (batch 64, 256, 256, 128 in the review)."""
    trials = _sweep(tmp_path, GRID_PLUS_RANGE)
    out = capsys.readouterr().out
    assert all(t.state == State.COMPLETE for t in trials)
    configs = _configs(trials)
    assert sorted(c["batch_size"] for c in configs) == [32, 64, 128, 256]
    lrs = [c["lr"] for c in configs]
    assert all(0.05 <= lr <= 0.2 for lr in lrs) and len(set(lrs)) == 4  # sampled per trial
    assert [t.system_attrs["fixed_params"] for t in trials] == [
        {"batch_size": b} for b in (32, 64, 128, 256)]
    assert "(4 trials: 4 grid configurations × 1 sample; sampled per trial: lr)" in out


def test_a_choice_field_is_sampled_once_per_trial_not_enqueued_like_a_grid(tmp_path, capsys):
    """Before: every choice value was enqueued (3 trials; Ray runs 1)."""
    trials = _sweep(tmp_path, CHOICE_ONLY)
    out = capsys.readouterr().out
    (trial,) = trials
    assert trial.state == State.COMPLETE and trial.params["lr"] in (0.05, 0.1, 0.2)
    assert trial.system_attrs["fixed_params"] == {}
    assert "(1 trial: 1 grid configuration × 1 sample; sampled per trial: lr)" in out


def test_num_samples_repeats_the_grid_and_a_rerun_enqueues_nothing(tmp_path, capsys):
    """Before: the repeat was deduplicated away (2 trials; Ray runs 4). A repeat whose config
    a finished trial ran takes its value untrained (nothing is sampled in this space)."""
    trials = _sweep(tmp_path, GRID_NUM_SAMPLES)
    out = capsys.readouterr().out
    assert [(t.params["batch_size"], t.user_attrs[KEY_ATTR]) for t in trials] == [
        (32, '{"batch_size": 32}'), (128, '{"batch_size": 128}'),
        (32, '{"batch_size": 32} repeat 1'), (128, '{"batch_size": 128} repeat 1')]
    assert all(t.state == State.COMPLETE for t in trials)
    assert [t.user_attrs.get(REPEAT_ATTR) for t in trials] == [None, None, 0, 1]
    # the fixed lr is the beacon lr: the batch sizes are beacons, in every repeat, as on Ray
    assert all(t.user_attrs[BEACON_ATTR] for t in trials)
    trials_again = _sweep(tmp_path, GRID_NUM_SAMPLES)  # the same study, resumed
    assert "already holds 4 finished trials: nothing to run" in capsys.readouterr().out
    assert len(trials_again) == 4
    assert "(4 trials: 2 grid configurations × 2 samples; nothing is sampled" in out


def test_set_holds_a_searched_field_fixed_as_on_ray(tmp_path, capsys):
    """Before: ``--set batch_size=64`` on a batch grid failed on Optuna ("both searched by
    the space and fixed") while Ray ran it."""
    trials = _sweep(tmp_path, GRID_NUM_SAMPLES, "--set", "batch_size=64")
    header = capsys.readouterr().out
    assert "(2 trials: 1 grid configuration × 2 samples; nothing is sampled" in header
    assert [t.user_attrs["config"]["batch_size"] for t in trials] == [64, 64]
    assert [t.user_attrs.get(REPEAT_ATTR) for t in trials] == [None, 0]


@contextlib.contextmanager
def read_before_any_wrote(study: optuna.Study) -> Iterator[None]:
    """Every read of the study's trials answers what the storage held on entry (workers that
    all checked before any of them inserted: ``test_optuna_enqueue``)."""
    snapshot = study.get_trials(deepcopy=True)

    def get_trials(self, deepcopy=True, states=None):
        return [t for t in snapshot if states is None or t.state in states]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optuna.Study, "get_trials", get_trials)
        yield


def _enqueue(study: optuna.Study, space) -> None:
    for params, key, beacon in grid_queue(space):
        (enqueue_beacon if beacon else enqueue_once)(study, params, key=key)


def test_each_point_and_repeat_is_enqueued_once_by_restarts_and_runs_once_in_a_race():
    space = parse_space({"search": {"num_samples": 2}, "fixed": {"lr": 0.1},
                         "params": {"batch_size": {"grid": [32, 128]}}})
    study = optuna.create_study()
    for _ in range(3):  # a worker, a restart, a second worker
        _enqueue(study, space)
    assert len(study.get_trials(states=(State.WAITING,))) == 4
    raced = optuna.create_study()
    with read_before_any_wrote(raced):  # two workers enqueue at the same instant
        _enqueue(raced, space)
        _enqueue(raced, space)
    ran = []
    for _ in range(8):
        trial = raced.ask()
        try:
            skip_duplicate(trial)
        except optuna.TrialPruned:
            raced.tell(trial, state=State.PRUNED)
            continue
        ran.append(trial.user_attrs[KEY_ATTR])
        raced.tell(trial, 0.5)
    assert sorted(ran) == sorted(key for _, key, _ in grid_queue(space))
    assert sum(DUPLICATE_ATTR in t.user_attrs for t in raced.trials) == 4


def test_beacons_are_fixed_batch_points_at_the_beacon_lr_constants_included():
    """As the Ray searcher's ``is_beacon``: a constant lr counts, a schedule is no beacon, a
    sampled lr never is one."""
    abs_space = read_space("abs_cifar100_resnet20")  # strategy × batch grids, lr = 0.1 fixed
    beacons = [point for point, _, beacon in grid_queue(abs_space) if beacon]
    assert beacons == [{"strategy": "fixed", "batch_size": b} for b in (128, 256, 512, 1024,
                                                                        2048)]
    assert grid_queue(abs_space)[0][2] and not grid_queue(abs_space)[-1][2]  # beacons first
    sampled = parse_space({"search": {"beacons": [32], "beacon_lr": 0.1},
                           "params": {"batch_size": {"grid": [32]},
                                      "lr": {"choice": [0.1, 0.2]}}})
    assert [beacon for _, _, beacon in grid_queue(sampled)] == [False]
    assert is_beacon({"batch_size": 32, "lr": 0.1}, sampled.search)
    held = held_fixed(sampled, {"lr": 0.1})  # --set lr=0.1: the point is a beacon again
    assert [beacon for _, _, beacon in grid_queue(held)] == [True]
