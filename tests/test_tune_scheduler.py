"""MeasureScheduler decisions without a Ray cluster: a mock controller, as Ray's own
tests/test_trial_scheduler.py does, stub Trials, and results built by hand."""

import math
from unittest.mock import MagicMock

import pandas as pd
import pytest
from ray.tune.experiment import Trial

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict import FinalErrorPredictor, Prediction
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.records import RECORD_COLUMNS, empty_record
from tune_batchdyn.tune import CONTINUE, PAUSE, STOP, MeasureScheduler, RerouteOption

EPOCHS = 8


def controller(trials=()):
    runner = MagicMock()
    runner.get_trials.return_value = list(trials)
    return runner


def make_trial(batch_size=32, lr=0.1, strategy="fixed"):
    return Trial("__fake", config={"batch_size": batch_size, "lr": lr, "strategy": strategy,
                                   "epochs": EPOCHS}, stub=True)


def result(epoch, val_error, *, diverged=False, epochs=EPOCHS, **extra):
    record = empty_record()
    record.update(epoch=epoch, iterations=10 * epoch, samples_seen=320 * epoch, batch_size=32,
                  lr=0.1, val_error=val_error, test_error=val_error, train_error=val_error,
                  ck_bar=5.0 + epoch, lk=0.1 * epoch, diverged=diverged)
    return {**record, "budget_fraction": epoch / epochs, **extra}


def finish(scheduler, runner, final_errors):
    """Trials that ran their whole budget and ended at ``final_errors`` (never stopped: their
    predictions are NaN meanwhile)."""
    fixed_prediction(scheduler, mean=math.nan, bound=math.nan)
    for final in final_errors:
        trial = make_trial()
        scheduler.on_trial_add(runner, trial)
        for epoch in range(1, EPOCHS + 1):
            scheduler.on_trial_result(runner, trial, result(epoch, final + 0.01 * (EPOCHS - epoch)))
        scheduler.on_trial_complete(runner, trial, result(EPOCHS, final))


def fixed_prediction(scheduler, mean, bound):
    """Every prediction: final ``mean`` and lower bound ``bound`` (the predictor's conformal
    bound, which a test of its own checks)."""
    scheduler._prediction = lambda rows: (Prediction(mean, 0.05, "stub", 0.5), bound)


@pytest.fixture
def scheduler():
    return MeasureScheduler(metric="val_error", mode="min", grace_fraction=0.25, top_k=3,
                            confidence=0.9, min_finished=2, reroute=False)


def test_result_without_the_metric_continues_and_is_not_recorded(scheduler):
    runner, trial = controller(), make_trial()
    scheduler.on_trial_add(runner, trial)
    assert scheduler.on_trial_result(runner, trial, {"epoch": 1, "loss": 3.0}) == CONTINUE
    assert scheduler.on_trial_result(runner, trial, result(1, math.nan)) == CONTINUE
    assert scheduler.history.last(trial.trial_id) is None


def test_diverged_trial_stops_at_once_even_inside_the_grace_period(scheduler):
    runner, trial = controller(), make_trial()
    scheduler.on_trial_add(runner, trial)
    assert scheduler.on_trial_result(runner, trial, result(1, 0.9, diverged=True)) == STOP
    row = scheduler.decisions.iloc[0]
    assert (row["action"], row["reason"], row["epoch"], row["val_error"]) == (
        "stop", "diverged", 1, 0.9)


def test_no_stop_before_the_grace_fraction(scheduler):
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20, 0.30])
    fixed_prediction(scheduler, mean=0.95, bound=0.95)  # hopeless, but too early to say
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    assert scheduler.on_trial_result(runner, trial, result(1, 0.9)) == CONTINUE  # 1/8 < 0.25
    assert scheduler.on_trial_result(runner, trial, result(2, 0.9)) == STOP  # 2/8 = 0.25


def test_stop_when_the_lower_bound_is_above_the_kth_best(scheduler):
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20, 0.30, 0.40])  # 3rd best final: 0.30
    worse, close = make_trial(), make_trial()
    for trial in (worse, close):
        scheduler.on_trial_add(runner, trial)
    fixed_prediction(scheduler, mean=0.45, bound=0.35)  # 0.35 > 0.30
    assert scheduler.on_trial_result(runner, worse, result(4, 0.5)) == STOP
    fixed_prediction(scheduler, mean=0.38, bound=0.28)  # 0.28 <= 0.30: not confidently worse
    assert scheduler.on_trial_result(runner, close, result(4, 0.5)) == CONTINUE
    stop = scheduler.decisions.iloc[0]
    assert stop["rival"] == pytest.approx(0.30)
    assert stop["lower_bound"] == pytest.approx(0.35)
    assert stop["fraction"] == pytest.approx(0.5)
    assert "3rd best" in stop["reason"]


def test_the_stop_bound_is_the_predictors_conformal_bound_and_nan_stops_nothing():
    """Unstubbed: the decision row's bound equals ``FinalErrorPredictor.lower_bound`` at the
    scheduler's confidence, fitted on the finished trials; with too few finished trials to
    vouch for 0.9 (8: the bound is NaN) a hopeless trial continues, with 9 it stops."""
    def decide(n_finished):
        scheduler = MeasureScheduler(metric="val_error", mode="min", grace_fraction=0.25,
                                     min_finished=2, reroute=False)
        runner = controller()
        for i in range(n_finished):
            trial = make_trial(lr=0.05 + 0.01 * i)
            scheduler.on_trial_add(runner, trial)
            final = 0.1 + 0.01 * i
            for epoch in range(1, EPOCHS + 1):
                scheduler.on_trial_result(runner, trial,
                                          result(epoch, final + 0.02 * (EPOCHS - epoch)))
            scheduler.on_trial_complete(runner, trial, result(EPOCHS, final))
        trial = make_trial(lr=0.5)
        scheduler.on_trial_add(runner, trial)
        decisions = [scheduler.on_trial_result(runner, trial, result(e, 0.9)) for e in (1, 2)]
        return scheduler, decisions

    _, decisions = decide(8)
    assert decisions == [CONTINUE, CONTINUE]
    scheduler, decisions = decide(9)
    assert decisions == [CONTINUE, STOP]
    stop = scheduler.decisions.iloc[0]
    reference = FinalErrorPredictor(target="final_val_error", min_finished=2).fit(
        scheduler.history.table(scheduler.history.ids("finished"), "val_error"))
    rows = scheduler.history.frame(stop["trial_id"])
    assert stop["lower_bound"] == pytest.approx(reference.lower_bound(rows, 0.9), rel=1e-12)
    assert stop["rival"] == pytest.approx(0.12)
    assert 0.12 < stop["lower_bound"] < stop["predicted_mean"]


def test_running_trials_predictions_count_among_the_best(scheduler):
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20, 0.30])
    leaders = [make_trial(), make_trial()]
    fixed_prediction(scheduler, mean=0.05, bound=0.05)
    for trial in leaders:
        scheduler.on_trial_add(runner, trial)
        assert scheduler.on_trial_result(runner, trial, result(4, 0.2)) == CONTINUE
    # pool: 0.05, 0.05 (running, predicted), 0.10, 0.20, 0.30 (finished): 3rd best = 0.10
    assert scheduler._kth_best(excluding="nobody") == pytest.approx(0.10)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    fixed_prediction(scheduler, mean=0.16, bound=0.11)  # 0.11 > 0.10
    assert scheduler.on_trial_result(runner, trial, result(4, 0.3)) == STOP
    # a stopped trial's prediction leaves the pool
    scheduler.on_trial_complete(runner, leaders[0], result(4, 0.2))
    assert scheduler._kth_best(excluding="nobody") == pytest.approx(0.20)


def test_fewer_than_k_references_never_stop(scheduler):
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20])
    fixed_prediction(scheduler, mean=0.9, bound=0.9)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    assert scheduler.on_trial_result(runner, trial, result(4, 0.9)) == CONTINUE


def test_a_repeated_epoch_is_not_decided_twice(scheduler):
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20, 0.30])
    fixed_prediction(scheduler, mean=0.9, bound=0.9)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    assert scheduler.on_trial_result(runner, trial, result(4, 0.9)) == STOP
    assert scheduler.on_trial_result(runner, trial, result(4, 0.9)) == CONTINUE
    assert len(scheduler.decisions) == 1


def test_real_predictor_stops_a_bad_trial_and_keeps_a_good_one():
    records = synthetic_records(n_configs=12, n_seeds=2, epochs=EPOCHS, seed=5, diverging=0.0)
    scheduler = MeasureScheduler(metric="val_error", mode="min", reroute=False)
    runner = controller()
    finals = records.groupby("trial_id")["final_val_error"].first().sort_values()
    held_out = [finals.index[0], finals.index[-1]]  # the best and the worst trial
    for trial_id, rows in records.groupby("trial_id"):
        if trial_id in held_out:
            continue
        trial = make_trial()
        scheduler.on_trial_add(runner, trial)
        for row in rows.to_dict("records"):
            scheduler.on_trial_result(runner, trial, row)
        scheduler.on_trial_complete(runner, trial, row)
    decisions = {}
    for trial_id in held_out:
        trial = make_trial()
        scheduler.on_trial_add(runner, trial)
        rows = records[records["trial_id"] == trial_id].to_dict("records")
        decisions[trial_id] = [scheduler.on_trial_result(runner, trial, row) for row in rows[:4]]
    assert decisions[finals.index[0]] == [CONTINUE] * 4
    assert STOP in decisions[finals.index[-1]]
    # the worst trial's true final error is far above the 3rd best finished one
    assert finals.iloc[-1] > finals.iloc[3] + 0.1


class StubPlanner:
    """Says every running trial is off course and ``[32,32,32,128,...]`` brings it in."""

    def __init__(self, worthwhile=True):
        self.worthwhile = worthwhile
        self.calls = 0

    def region(self, table, metric):
        return "region"

    def reroute(self, finished, region, rows, config):
        self.calls += 1
        return RerouteOption("[32,32,32,128,128,128,128,128]", 32, (10.0, 1.0), 2.0, False,
                             (5.0, 0.5), 0.1, self.worthwhile, 0.05)


def rerouting_scheduler(planner) -> MeasureScheduler:
    """A scheduler that may reroute from a quarter of the budget, two trials finished."""
    scheduler = MeasureScheduler(metric="val_error", mode="min", planner=planner,
                                 min_finished=2, reroute_fraction=0.25)
    finish(scheduler, controller(), [0.10, 0.20])
    fixed_prediction(scheduler, mean=0.2, bound=0.1)
    return scheduler


def test_reroute_pauses_then_sets_the_schedule_while_paused_and_resumes_it_first():
    planner = StubPlanner()
    scheduler = rerouting_scheduler(planner)
    waiting, trial = make_trial(), make_trial()
    runner = controller([waiting, trial])
    for t in (waiting, trial):
        scheduler.on_trial_add(runner, t)
    assert scheduler.on_trial_result(runner, trial, result(1, 0.5)) == CONTINUE  # 1/8 < 0.25
    assert scheduler.on_trial_result(runner, trial, result(2, 0.4)) == PAUSE
    assert scheduler.on_trial_result(runner, trial, result(3, 0.4)) == CONTINUE  # once
    assert planner.calls == 1
    trial.status = Trial.PAUSED  # what the controller does on PAUSE
    assert trial.config["strategy"] == "fixed"  # unchanged until it is paused
    assert scheduler.choose_trial_to_run(runner) is trial  # before the pending trial
    assert trial.config["strategy"] == "[32,32,32,128,128,128,128,128]"
    assert trial.config["batch_size"] == 32
    assert scheduler.history.config(trial.trial_id)["strategy"] == trial.config["strategy"]
    trial.status = Trial.RUNNING
    assert scheduler.choose_trial_to_run(runner) is waiting  # then FIFO
    row = scheduler.decisions.iloc[-1]
    assert row["action"] == "reroute" and row["epoch"] == 2
    assert row["planned_distance"] == pytest.approx(0.1)
    assert "[32×3,128×5] ends inside" in row["reason"]  # repeated stages as runs


def test_no_reroute_when_the_planned_course_is_no_better():
    scheduler = MeasureScheduler(metric="val_error", mode="min",
                                 planner=StubPlanner(worthwhile=False), min_finished=2)
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20])
    fixed_prediction(scheduler, mean=0.2, bound=0.1)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    assert [scheduler.on_trial_result(runner, trial, result(e, 0.3)) for e in (1, 2, 3)] == [
        CONTINUE] * 3
    assert len(scheduler.decisions) == 0


def test_reroute_is_checked_again_when_the_region_changes_until_half_the_budget():
    planner = StubPlanner(worthwhile=False)
    scheduler = MeasureScheduler(metric="val_error", mode="min", planner=planner,
                                 min_finished=2)
    runner = controller()
    finish(scheduler, runner, [0.10, 0.20])
    fixed_prediction(scheduler, mean=0.2, bound=0.1)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    checks = []
    for epoch in (1, 2, 3, 4):  # budget 8 epochs: the window is [0.1, 0.5)
        if epoch in (3, 4):
            finish(scheduler, runner, [0.15])  # another trial finished: a new region
            fixed_prediction(scheduler, mean=0.2, bound=0.1)
        before = planner.calls
        assert scheduler.on_trial_result(runner, trial, result(epoch, 0.3)) == CONTINUE
        checks.append(planner.calls - before)
    assert checks == [1, 0, 1, 0]  # same region: no new check; epoch 4 = half the budget


def test_metric_and_mode_checks():
    with pytest.raises(ConfigError, match="mode='max' is not accepted"):
        MeasureScheduler(metric="val_error", mode="max")
    with pytest.raises(ConfigError, match="grace_fraction=1.5"):
        MeasureScheduler(grace_fraction=1.5)
    with pytest.raises(ConfigError, match="top_k=0"):
        MeasureScheduler(top_k=0)
    for confidence in (1.0, 0.3):  # a probability now, not a number of standard deviations
        with pytest.raises(ConfigError, match=rf"confidence={confidence} .* in \[0.5, 1\)"):
            MeasureScheduler(confidence=confidence)
    with pytest.raises(ConfigError, match=r"reroute_until=0.1 .* in \(0.1, 1\]"):
        MeasureScheduler(reroute_until=0.1)
    scheduler = MeasureScheduler()
    with pytest.raises(ConfigError, match="has no metric"):
        scheduler.on_trial_add(controller(), make_trial())
    assert scheduler.set_search_properties("val_error", "min") is True
    assert MeasureScheduler("val_error", "min").set_search_properties("test_error", "min") is False


def test_debug_string_and_the_records_kept():
    scheduler = MeasureScheduler(metric="val_error", mode="min", reroute=False)
    runner = controller()
    finish(scheduler, runner, [0.1])
    text = scheduler.debug_string()
    assert "1 finished, 0 running" in text
    assert text.endswith("decisions: stopped=0 rerouted=0 spawned=0")
    table = scheduler.history.table(metric="val_error")
    assert list(table.columns[:len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert table["budget_fraction"].tolist() == [e / EPOCHS for e in range(1, EPOCHS + 1)]
    assert isinstance(scheduler.decisions, pd.DataFrame)


def hopeless(runner, **protection):
    """A scheduler with four finished trials that predicts every running trial hopeless."""
    scheduler = MeasureScheduler(metric="val_error", mode="min", grace_fraction=0.25,
                                 min_finished=2, reroute=False, **protection)
    finish(scheduler, runner, [0.10, 0.20, 0.30, 0.40])
    fixed_prediction(scheduler, mean=0.95, bound=0.95)
    return scheduler


def mark(scheduler, trial, origin):
    """Make ``trial`` a beacon, a planned trial, or one this scheduler rerouted."""
    if origin == "rerouted":
        scheduler.history.decisions.add("reroute", trial.trial_id, "planned course")
    else:
        scheduler.history.register(trial.trial_id, trial.config, origin)


@pytest.mark.parametrize(("origin", "flag"), [
    ("beacon", "protect_beacons"), ("planned", "protect_plans")])
def test_protected_trials_are_never_stopped_by_prediction_only_by_divergence(origin, flag):
    runner = controller()
    scheduler = hopeless(runner)
    protected, other = make_trial(), make_trial()
    for trial in (protected, other):
        scheduler.on_trial_add(runner, trial)
    mark(scheduler, protected, origin)
    assert scheduler.on_trial_result(runner, protected, result(4, 0.9)) == CONTINUE
    assert scheduler.on_trial_result(runner, other, result(4, 0.9)) == STOP
    assert scheduler.on_trial_result(runner, protected, result(5, 0.9, diverged=True)) == STOP
    unprotected = hopeless(runner, **{flag: False})
    unprotected.on_trial_add(runner, protected)
    mark(unprotected, protected, origin)
    assert unprotected.on_trial_result(runner, protected, result(4, 0.9)) == STOP


def test_a_rerouted_trial_is_judged_like_the_others():
    runner = controller()
    scheduler = hopeless(runner)
    trial = make_trial()
    scheduler.on_trial_add(runner, trial)
    mark(scheduler, trial, "rerouted")
    assert scheduler.on_trial_result(runner, trial, result(4, 0.9)) == STOP


def test_a_trial_without_a_checkpoint_every_epoch_is_not_rerouted():
    planner = StubPlanner()
    scheduler = rerouting_scheduler(planner)
    trial = make_trial()
    trial.config["checkpoint_every"] = 2  # a reroute at epoch 3 would restart from scratch
    runner = controller([trial])
    scheduler.on_trial_add(runner, trial)
    assert [scheduler.on_trial_result(runner, trial, result(e, 0.4)) for e in (1, 2, 3)] == [
        CONTINUE] * 3
    assert planner.calls == 0


def test_a_planned_trial_is_not_rerouted():
    from tune_batchdyn.tune.history import PLANNED

    planner = StubPlanner()
    scheduler = rerouting_scheduler(planner)
    trial = make_trial()
    scheduler.history.register(trial.trial_id, trial.config, PLANNED)  # the searcher's spawn
    runner = controller([trial])
    scheduler.on_trial_add(runner, trial)
    assert [scheduler.on_trial_result(runner, trial, result(e, 0.4)) for e in (1, 2, 3)] == [
        CONTINUE] * 3
    assert planner.calls == 0


def test_history_must_be_a_trial_history():
    from tune_batchdyn.tune import DynamicSamplingSearcher

    searcher = DynamicSamplingSearcher([{"batch_size": 32, "lr": 0.1}])
    with pytest.raises(ConfigError, match="history=DynamicSamplingSearcher is not accepted; use "
                                          r"the searcher's TrialHistory \(history=searcher"):
        MeasureScheduler(history=searcher)


def test_the_decisions_callback_carries_the_history_through_a_restore():
    import pickle

    from tune_batchdyn.tune import DecisionsCallback

    scheduler = MeasureScheduler(metric="val_error", mode="min", min_finished=2, reroute=False)
    callback = DecisionsCallback(scheduler)
    finish(scheduler, controller(), [0.10, 0.20])
    scheduler.history.decisions.add("stop", "t1", "test", epoch=2)
    state = pickle.loads(pickle.dumps(callback.get_state()))  # what Ray saves
    # Tuner.restore unpickles the scheduler and the callback as they were built, then sets
    # the callback's saved state
    fresh_scheduler, fresh_callback = pickle.loads(pickle.dumps(
        (scheduler0 := MeasureScheduler(metric="val_error", mode="min"),
         DecisionsCallback(scheduler0))))
    fresh_callback.set_state(state)
    assert fresh_scheduler.history is fresh_callback.history
    assert len(fresh_scheduler.history.ids()) == 2
    assert fresh_scheduler.decisions["trial_id"].tolist() == ["t1"]
    with pytest.raises(ConfigError, match="DecisionsCallback: source='scheduler' is not accepted"):
        DecisionsCallback("scheduler")
