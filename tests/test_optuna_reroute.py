"""RerouteCallback: the plan it enqueues (recomputed from the records table without Optuna), its
guards, and deduplication across callbacks and simultaneous enqueues (worker processes sharing a
study: tests/test_optuna_storage.py)."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    DUPLICATE_ATTR,
    KEY_ATTR,
    PLAN_ATTR,
    PLAN_KEY_ATTR,
    SCHEDULE_ATTR,
    RerouteCallback,
    composable,
    count_decisions,
    decisions_line,
    enqueue_replay,
    make_objective,
    plan_key,
    planned_keys,
    replay_objective,
)
from tune_batchdyn.predict import OptimumRegion, plan_schedule, schedule_family
from tune_batchdyn.predict.synthetic import synthetic_records

optuna.logging.set_verbosity(optuna.logging.WARNING)

NQM10 = {"dataset": "nqm", "model": "nqm", "epochs": 10,
         "dataset_options": {"samples_per_epoch": 3200, "dim": 200, "bins": 10}}


@pytest.fixture(scope="module")
def beacons() -> pd.DataFrame:
    """Fixed-batch trials with C̄K and LK (batch 16..512 at three lrs), 10 epochs."""
    return synthetic_records(n_configs=18, n_seeds=1, epochs=10, seed=1, diverging=0.0)


def _filled(table: pd.DataFrame) -> optuna.Study:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    order = enqueue_replay(study, table)
    study.optimize(replay_objective(table), n_trials=len(order))
    return study


def _expected_plan(table: pd.DataFrame) -> dict:
    """The planner run on the table itself: lr of the best trial, dynamic candidates."""
    finals = table.groupby("trial_id").last()
    lr = float(finals.sort_values("final_val_error")["config/lr"].iloc[0])
    sizes = sorted(table.loc[table["config/lr"] == lr, "batch_size"].unique())
    region = OptimumRegion(fraction=1.0, k=5, target="final_val_error").fit(table)
    plan = plan_schedule(table, region, lr=lr,
                         candidates=[s.spec for s in schedule_family(sizes) if s.spec != "fixed"])
    return {"strategy": plan.schedule, "batch_size": plan.batch_size, "lr": plan.lr}


def _waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_enqueues_the_planners_choice(beacons):
    study = _filled(beacons)
    RerouteCallback()(study, study.trials[-1])
    (trial,) = _waiting(study)
    expected = _expected_plan(beacons)
    assert trial.user_attrs[PLAN_ATTR] == expected
    assert trial.user_attrs[SCHEDULE_ATTR] == expected["strategy"]  # a plain string
    assert trial.user_attrs[PLAN_KEY_ATTR] == trial.user_attrs[KEY_ATTR] == plan_key(expected)
    assert trial.system_attrs["fixed_params"] == expected
    assert math.isfinite(trial.user_attrs["reroute/predicted_error"])
    lr = f"{expected['lr']:g}"  # every size read at the plan's own lr
    assert all(read.endswith(f"@{lr}") for read in trial.user_attrs["reroute/reads"].split())
    assert decisions_line(study) == ("decisions: pruned=0 enqueued=1 (1 waiting: run "
                                     "study.optimize again to train it)")
    study.optimize(lambda t: 0.5, n_trials=1)  # the plan's trial ran
    assert decisions_line(study) == "decisions: pruned=0 enqueued=1"


def test_two_callbacks_enqueue_one_plan_once(beacons):
    study = _filled(beacons)
    first, second = RerouteCallback(), RerouteCallback()
    for callback in (first, second, first, second):
        callback(study, study.trials[-1])
    assert len(_waiting(study)) == 1
    assert count_decisions(study).enqueued == 1


def test_guards(beacons):
    study = _filled(beacons)
    last = study.trials[-1]
    RerouteCallback(min_beacons=7)(study, last)  # six batch sizes per lr
    assert not _waiting(study)
    pruned = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED)
    RerouteCallback()(study, pruned)  # only completions trigger a decision
    assert not _waiting(study)
    other = {"strategy": "s16-to-32", "batch_size": 16, "lr": 0.3}
    study.enqueue_trial(other, user_attrs={PLAN_ATTR: other, PLAN_KEY_ATTR: plan_key(other)})
    RerouteCallback(max_plans=1)(study, last)
    assert planned_keys(study) == {plan_key(other)}
    RerouteCallback(max_plans=2)(study, last)
    assert len(planned_keys(study)) == 2


def test_composable_keeps_the_schedules_made_of_beacon_sizes():
    """The seed's geometric schedules need beacons at every power of two between their ends."""
    specs = ["s32-to-512", "s32-to-512-MS", "[32,128,512]-MS", "[8,128]", "s512-to-32",
             {"name": "s32-to-512"}]
    assert composable(specs, (8, 32, 128, 512)) == ["[32,128,512]-MS", "[8,128]"]
    assert composable(specs[:2], (32, 64, 128, 256, 512)) == specs[:2]
    assert composable(specs, ()) == []


def test_no_measures_no_plan(beacons):
    study = _filled(beacons.assign(ck_bar=math.nan))
    RerouteCallback()(study, study.trials[-1])
    assert not _waiting(study)


def test_simultaneous_enqueues_run_the_plan_once():
    """Two workers that decided at the same instant both enqueued (each wrote what
    ``enqueue_once`` writes, neither saw the other's): the later trial is pruned before
    training, and the pair counts as one plan, no pruned trial."""
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    plan = {"strategy": "s16-to-64", "batch_size": 16, "lr": 0.2}
    attrs = {PLAN_ATTR: plan, PLAN_KEY_ATTR: plan_key(plan), KEY_ATTR: plan_key(plan)}
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, user_attrs=attrs,
            system_attrs={"fixed_params": plan}))
    study.optimize(make_objective(None, **NQM10), n_trials=2)
    runner, duplicate = study.trials
    assert runner.state == optuna.trial.TrialState.COMPLETE
    assert duplicate.state == optuna.trial.TrialState.PRUNED
    assert duplicate.user_attrs[DUPLICATE_ATTR] == runner.number
    assert not any(k.startswith("record/") for k in duplicate.user_attrs)
    assert decisions_line(study) == "decisions: pruned=0 enqueued=1"


def test_a_failed_plan_may_be_planned_again(beacons):
    study = _filled(beacons)
    RerouteCallback()(study, study.trials[-1])
    (waiting,) = _waiting(study)
    trial = study.ask()  # pops the waiting plan
    assert trial.number == waiting.number
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert planned_keys(study) == set()
    RerouteCallback()(study, study.trials[-2])
    assert [t.user_attrs[PLAN_KEY_ATTR] for t in _waiting(study)] == [waiting.user_attrs[
        PLAN_KEY_ATTR]]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_beacons": 1}, "min_beacons=1"),
    ({"max_plans": 0}, "max_plans=0"),
    ({"lr": -0.1}, "lr=-0.1"),
    ({"candidates": "s32-to-64"}, "candidates='s32-to-64'"),
    ({"metric": "lk"}, "metric='lk'"),
    ({"metric": "train_loss"}, "metric='train_loss' is not accepted by RerouteCallback; use "
                               "one of: 'val_error', 'test_error'"),
    ({"metric": "train_error"}, "metric='train_error' is not accepted"),
    ({"k": 0}, "k=0"),
    ({"candidates": ["bogus"]}, r"candidates\[0\]='bogus' is not accepted; use schedule specs: "
                                r"'s\{a\}-to-\{b\}', 's\{a\}-to-\{b\}-MS', '\[16,32,64\]'"),
    ({"candidates": ["s32-to-64", 64]}, r"candidates\[1\]=64 is not accepted"),
    ({"lr_decay_factor": -5}, r"lr_decay_factor must be a number of at least 1 .* but got "
                              r"lr_decay_factor=-5"),
    ({"lr_milestones": [2.0]}, r"lr_milestones must be a list of increasing fractions of the "
                               r"epochs in \(0, 1\) .* but got lr_milestones=\[2.0\]"),
    ({"lr_milestones": 0.5}, r"but got lr_milestones=0.5"),
    ({"lr_milestones": [0.75, 0.5]}, r"but got lr_milestones=\[0.75, 0.5\]"),
])
def test_arguments_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RerouteCallback(**kwargs)


def test_the_reason_no_plan_was_made_is_kept_for_the_summary():
    callback = RerouteCallback(min_beacons=2, k=50)
    assert callback.no_plan_reason == ""
    records = synthetic_records(n_configs=6, n_seeds=1, epochs=5, seed=0, diverging=0.0)
    assert callback.plan(records) is None
    assert callback.no_plan_reason.endswith("finished trials in the (C̄K, LK) plane, need k=50")


def test_the_reason_is_cleared_by_a_check_that_plans():
    callback = RerouteCallback(min_beacons=2, k=5)
    records = synthetic_records(n_configs=6, n_seeds=1, epochs=5, seed=0, diverging=0.0)
    first_four = records[records["trial_id"].isin(records["trial_id"].unique()[:4])]
    assert callback.plan(first_four) is None
    assert callback.no_plan_reason.endswith("need k=5")
    assert callback.plan(records) is not None
    assert callback.no_plan_reason == ""
