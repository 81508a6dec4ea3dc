"""objective / make_objective on NQM trials (milliseconds each): config sampling, what is
stored per epoch, pruning, divergence, spaces, rerouted trials and SQLite round trips."""

from __future__ import annotations

import math

import optuna
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    DIVERGED_ERROR,
    PLAN_ATTR,
    PLAN_KEY_ATTR,
    PRUNE_REASON_ATTR,
    SCHEDULE_ATTR,
    MeasurePruner,
    make_objective,
    objective,
    open_study,
    plan_key,
)
from tune_batchdyn.predict import FinalErrorPredictor
from tune_batchdyn.records import (
    RECORD_COLUMNS,
    REPEAT_ATTR,
    record_attr_name,
    records_from_optuna,
)
from tune_batchdyn.space import load_space
from tune_batchdyn.train import TrialConfig, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

NQM = {"dataset": "nqm", "model": "nqm", "epochs": 4,
       "dataset_options": {"samples_per_epoch": 3200, "dim": 200, "bins": 10}}
SPACE = {"batch_size": [16, 64], "lr": [0.1, 0.4]}


def _study(pruner=None, storage=None) -> optuna.Study:
    return optuna.create_study(pruner=pruner or optuna.pruners.NopPruner(), storage=storage,
                               sampler=optuna.samplers.RandomSampler(seed=0))


def test_trial_stores_plain_records_and_returns_the_final_val_error():
    study = _study()
    study.optimize(make_objective(SPACE, **NQM), n_trials=3)
    for trial in study.trials:
        config = TrialConfig.from_dict(trial.user_attrs["config"])
        assert (config.batch_size, config.lr) == (trial.params["batch_size"], trial.params["lr"])
        reference = run_trial(config)  # the same seed gives the same trajectory
        assert trial.value == pytest.approx(reference["val_error"].iloc[-1], rel=1e-12)
        assert trial.intermediate_values == pytest.approx(
            dict(zip(reference["epoch"], reference["val_error"], strict=True)), rel=1e-12)
        for epoch in range(1, 5):
            record = trial.user_attrs[record_attr_name(epoch)]
            assert list(record) == list(RECORD_COLUMNS)
            assert all(type(v) in (int, float, bool) for v in record.values())
            assert record["lk"] == pytest.approx(reference["lk"].iloc[epoch - 1], rel=1e-12)


def test_should_prune_raises_trial_pruned_after_the_epoch():
    always = optuna.pruners.ThresholdPruner(upper=-1.0)  # every value is above it
    study = _study(pruner=always)
    study.optimize(make_objective(SPACE, **NQM), n_trials=2)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert list(trial.intermediate_values) == [1]
        assert [k for k in trial.user_attrs if k.startswith("record/")] == [record_attr_name(1)]


def test_a_measure_pruner_trial_says_why_in_its_pruned_message():
    """Optuna logs the TrialPruned message: MeasurePruner's reason is in it."""
    always = optuna.pruners.ThresholdPruner(upper=-1.0)
    study = _study(pruner=MeasurePruner(base=always))
    objective = make_objective(SPACE, **NQM)
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match=r"^pruned after epoch 1 by ThresholdPruner$"):
        objective(trial)
    plain = _study(pruner=always)
    with pytest.raises(optuna.TrialPruned, match=r"^pruned after epoch 1$"):
        objective(plain.ask())


def test_the_last_epoch_is_never_offered_to_the_pruner():
    """A trial that trained all its epochs completes: pruning then would drop its result.
    The pruner is asked once before training (no step: None) and after each other epoch."""
    asked = []

    class Recording(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            asked.append(trial.last_step)
            return trial.last_step == NQM["epochs"]  # would prune at the last epoch

    study = _study(pruner=Recording())
    study.optimize(make_objective(SPACE, **NQM), n_trials=2)
    assert asked == [None, 1, 2, 3] * 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_a_hopeless_configuration_is_pruned_before_it_trains():
    """MeasurePruner judges a configuration before its first epoch: such a trial reports
    nothing, stores no record and says why; its bound is the predictor's from the trials that
    completed before it."""
    grid = {"batch_size": [8, 16, 32, 64, 128, 256, 512], "lr": [0.025, 0.1, 0.4]}
    pruner = MeasurePruner(base=optuna.pruners.NopPruner())
    study = optuna.create_study(pruner=pruner, sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(make_objective(grid, **NQM), n_trials=21)
    unseen = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED
              and not t.intermediate_values]
    assert unseen
    for trial in unseen:
        assert not [k for k in trial.user_attrs if k.startswith("record/")]
        reason = trial.user_attrs[PRUNE_REASON_ATTR]
        earlier = [t for t in study.trials[:trial.number]
                   if t.state == optuna.trial.TrialState.COMPLETE]
        bound = FinalErrorPredictor(target="final_val_error").fit(
            records_from_optuna(earlier)).config_lower_bound(
                trial.params["lr"], trial.params["batch_size"], 0.9)
        assert reason["by"] == "configuration"
        assert reason["lower_bound"] == pytest.approx(bound, rel=1e-9)
        assert reason["rival"] == min(t.value for t in earlier) < bound
    # another seed of the most hopeless configuration: pruned before training, and why
    worst = max(unseen, key=lambda t: t.user_attrs[PRUNE_REASON_ATTR]["lower_bound"])
    study.enqueue_trial(worst.params)
    with pytest.raises(optuna.TrialPruned, match=r"^pruned before training by the "
                                                 r"configuration's bound: lower_bound="):
        make_objective(grid, seed=1, **NQM)(study.ask())


@pytest.mark.parametrize("diverged_error", [None, 5.0])
def test_a_diverged_trial_returns_its_error(diverged_error):
    study = _study(pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    kwargs = {} if diverged_error is None else {"diverged_error": diverged_error}
    study.optimize(make_objective({"lr": [5.0]}, batch_size=8, **NQM, **kwargs), n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE  # reported, never pruned
    assert trial.user_attrs[record_attr_name(1)]["diverged"] is True
    assert math.isnan(trial.intermediate_values[1])
    assert trial.value == (DIVERGED_ERROR if diverged_error is None else diverged_error)


def test_objective_function_form_and_space_files():
    study = _study()
    space = load_space("nqm", backend="optuna")
    study.optimize(lambda t: objective(t, space, epochs=2,
                                       dataset_options=NQM["dataset_options"]), n_trials=2)
    for trial in study.trials:
        assert set(trial.params) == {"batch_size", "lr"}
        config = trial.user_attrs["config"]
        assert config["epochs"] == 2 and config["dataset"] == "nqm"
        assert config["lr_milestones"] == [0.5, 0.75]  # the space's [fixed] value
    study.optimize(make_objective("nqm", epochs=2, dataset_options=NQM["dataset_options"]),
                   n_trials=1)
    assert study.trials[-1].user_attrs["config"]["epochs"] == 2


def test_optuna_distributions_in_a_dict_space():
    space = {"lr": optuna.distributions.FloatDistribution(0.05, 0.5, log=True),
             "batch_size": optuna.distributions.IntDistribution(16, 64, step=16)}
    study = _study()
    study.optimize(make_objective(space, **NQM), n_trials=2)
    for trial in study.trials:
        assert 0.05 <= trial.params["lr"] <= 0.5
        assert trial.params["batch_size"] in (16, 32, 48, 64)
        assert trial.user_attrs["config"]["lr"] == trial.params["lr"]


def test_rerouted_trial_runs_its_plan():
    study = _study()
    plan = {"strategy": "s16-to-64", "batch_size": 16, "lr": 0.4}
    study.enqueue_trial(plan, user_attrs={PLAN_ATTR: plan, PLAN_KEY_ATTR: plan_key(plan)})
    study.optimize(make_objective({"batch_size": [8, 32], "lr": [0.1, 0.4]},
                                  **{**NQM, "epochs": 5}), n_trials=1)
    trial = study.trials[0]
    # batch_size 16 is not a choice of the space: left out of params, run from the plan
    assert trial.params == {"lr": 0.4}
    config = trial.user_attrs["config"]
    assert (config["strategy"], config["batch_size"], config["lr"]) == ("s16-to-64", 16, 0.4)
    sizes = [trial.user_attrs[record_attr_name(e)]["batch_size"] for e in range(1, 6)]
    assert sizes == [16, 16, 32, 32, 64]  # the seed's s16-to-64


PLAN = {"strategy": "s16-to-64", "batch_size": 16, "lr": 0.4}


def _enqueue_plan(study: optuna.Study) -> None:
    study.enqueue_trial(PLAN, user_attrs={PLAN_ATTR: PLAN, SCHEDULE_ATTR: PLAN["strategy"],
                                          PLAN_KEY_ATTR: plan_key(PLAN)})


def test_a_planned_trial_does_not_pass_for_a_fixed_batch_trial():
    """The review's t1.db: the plan s128-to-512 from batch 128 had the params of the fixed
    batch-128 trial, so best_params, trials_dataframe and the sampler took one for the other.
    A plan's batch_size is no param now; its schedule is the user attribute reroute/schedule."""
    study = _study()
    study.enqueue_trial({"batch_size": 16, "lr": 0.4})
    _enqueue_plan(study)
    objective = make_objective(SPACE, **{**NQM, "epochs": 5})
    study.optimize(objective, n_trials=2)
    fixed, planned = study.trials
    assert fixed.params == {"batch_size": 16, "lr": 0.4}
    assert planned.params == {"lr": 0.4}
    sizes = [planned.user_attrs[record_attr_name(e)]["batch_size"] for e in range(1, 6)]
    assert sizes == [16, 16, 32, 32, 64]
    frame = study.trials_dataframe().set_index("number")
    assert frame.loc[0, "params_batch_size"] == 16 and math.isnan(frame.loc[1, "params_batch_size"])
    assert frame[f"user_attrs_{SCHEDULE_ATTR}"].fillna("").tolist() == ["", "s16-to-64"]
    # the sampler goes on with both: batch_size kept one distribution
    study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=0)
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials[2:]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.params["batch_size"] in (16, 64) for t in study.trials[2:])


@pytest.mark.parametrize(("strategies", "params"), [
    (["fixed", "s16-to-64"], PLAN),  # the schedule is a choice: the params say it all
    (["fixed", "gg"], {"lr": 0.4}),  # it is not: neither strategy nor batch_size
])
def test_a_planned_trial_keeps_batch_size_with_its_strategy(strategies, params):
    study = _study()
    _enqueue_plan(study)
    space = {"strategy": strategies, "batch_size": [16, 64], "lr": [0.1, 0.4]}
    study.optimize(make_objective(space, **{**NQM, "epochs": 5}), n_trials=1)
    assert study.trials[0].params == params


def test_measure_pruner_on_a_maximize_study_is_refused_before_training():
    study = optuna.create_study(direction="maximize", pruner=MeasurePruner())
    with pytest.raises(ConfigError, match="direction='maximize' is not accepted with "
                                          "MeasurePruner"):
        study.optimize(make_objective(SPACE, **NQM), n_trials=1)
    (trial,) = study.trials
    assert trial.user_attrs == {} and not trial.intermediate_values  # nothing trained


@pytest.mark.parametrize(("space", "defaults", "message"), [
    (SPACE, {"batch_size": 8}, "both searched"),
    (SPACE, {"batchsize": 8}, "unknown TrialConfig field"),
    ({"strategy": [{"name": "gg"}]}, {}, "cannot store"),
    ({"lr": 0.1}, {}, "list of choices"),
    (SPACE, {"diverged_error": math.nan}, "diverged_error"),
    (SPACE, {"metric": "lk"}, "metric"),
    ({"batch_size": [256, -3]}, {}, r"space\['batch_size'\] choice -3: batch_size=-3 is not "
                                    r"accepted; use an integer >= 1"),
    ({"strategy": ["fixed", "bogus"]}, {}, r"space\['strategy'\] choice 'bogus': "
                                           r"strategy='bogus' is not accepted; use one of: fixed"),
    ({"lr": optuna.distributions.FloatDistribution(0.1, math.inf)}, {},
     r"space\['lr'\] choice inf: lr"),
])
def test_bad_input_is_a_config_error(space, defaults, message):
    with pytest.raises(ConfigError, match=message):
        make_objective(space, **{**NQM, **defaults})


def test_sqlite_round_trip_rebuilds_the_trajectories(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, "objective", sampler=optuna.samplers.RandomSampler(seed=1),
                       heartbeat_interval=None)
    study.optimize(make_objective(SPACE, **NQM), n_trials=2)
    reloaded = optuna.load_study(study_name="objective", storage=storage)
    table = records_from_optuna(reloaded)
    for trial in reloaded.trials:
        rows = table[table["trial_id"] == str(trial.number)]
        reference = run_trial(TrialConfig.from_dict(trial.user_attrs["config"]))
        assert rows["val_error"].to_numpy() == pytest.approx(reference["val_error"].to_numpy())
        assert rows["config/batch_size"].iloc[0] == trial.params["batch_size"]


def test_a_repeated_config_takes_the_finished_trials_value_without_training(monkeypatch):
    import sys

    objective_module = sys.modules["tune_batchdyn.optuna.objective"]  # the package exports a
    trained = []                                                       # function of that name

    def counting_run_trial(config, reporter=None):
        trained.append((config.batch_size, config.lr))
        return run_trial(config, reporter)

    monkeypatch.setattr(objective_module, "run_trial", counting_run_trial)
    study = _study()
    study.enqueue_trial({"batch_size": 16, "lr": 0.1})
    study.enqueue_trial({"batch_size": 64, "lr": 0.1})
    study.enqueue_trial({"batch_size": 16, "lr": 0.1})  # a sampler's repeat
    study.optimize(make_objective(SPACE, **NQM), n_trials=3)
    assert trained == [(16, 0.1), (64, 0.1)]
    first, _, repeat = study.trials
    assert repeat.state == optuna.trial.TrialState.COMPLETE and repeat.value == first.value
    assert repeat.user_attrs[REPEAT_ATTR] == 0 and not repeat.intermediate_values
    assert records_from_optuna(study)["trial_id"].unique().tolist() == ["0", "1"]
    # a worker's device is not the trajectory: still a repeat; another seed is not
    other = make_objective(SPACE, **NQM, device="cpu")
    study.enqueue_trial({"batch_size": 64, "lr": 0.1})
    study.optimize(other, n_trials=1)
    assert study.trials[-1].user_attrs[REPEAT_ATTR] == 1
    study.enqueue_trial({"batch_size": 64, "lr": 0.1})
    study.optimize(make_objective(SPACE, **NQM, seed=1), n_trials=1)
    assert REPEAT_ATTR not in study.trials[-1].user_attrs and len(trained) == 3
    # skip_duplicates=False trains it again
    study.enqueue_trial({"batch_size": 16, "lr": 0.1})
    study.optimize(make_objective(SPACE, **NQM, skip_duplicates=False), n_trials=1)
    assert len(trained) == 4 and study.trials[-1].value == first.value


def test_a_repeated_config_is_found_by_another_worker_of_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = open_study(storage, "repeats", sampler=optuna.samplers.RandomSampler(seed=0))
    first.enqueue_trial({"batch_size": 16, "lr": 0.4})
    first.optimize(make_objective(SPACE, **NQM), n_trials=1)
    again = open_study(storage, "repeats")  # another worker: the config comes back from JSON
    again.enqueue_trial({"batch_size": 16, "lr": 0.4})
    again.optimize(make_objective(SPACE, **NQM), n_trials=1)
    assert again.trials[-1].user_attrs[REPEAT_ATTR] == 0
    assert again.trials[-1].value == again.trials[0].value


def test_a_repeat_returns_the_final_metric_not_a_wrapping_objectives_value():
    ours = make_objective(SPACE, **NQM)
    study = optuna.create_study(direction="maximize")
    for _ in range(2):
        study.enqueue_trial({"batch_size": 16, "lr": 0.1})
    study.optimize(lambda trial: 1.0 - ours(trial), n_trials=2)  # an accuracy, say
    first, repeat = study.trials
    assert repeat.user_attrs[REPEAT_ATTR] == 0
    assert repeat.value == first.value  # 1 - error once, not 1 - (1 - error)


def test_a_fixed_trial_is_trained_without_a_study():
    value = make_objective(SPACE, **NQM)(optuna.trial.FixedTrial({"batch_size": 16, "lr": 0.1}))
    reference = run_trial(TrialConfig.from_dict({**NQM, "batch_size": 16, "lr": 0.1}))
    assert value == pytest.approx(reference["val_error"].iloc[-1], rel=1e-12)


def test_the_records_keep_the_config_a_wrapping_objective_ran():
    study = _study()

    def scaled(trial):  # a base lr, scaled by the batch size (the linear scaling rule)
        batch = trial.suggest_categorical("batch_size", [16, 64])
        base = trial.suggest_categorical("lr", [0.1])
        return objective(trial, None, batch_size=batch, lr=base * batch / 16, **NQM)

    study.optimize(scaled, n_trials=2)
    table = records_from_optuna(study)
    for trial in study.trials:
        ran = table[table["trial_id"] == str(trial.number)]["config/lr"].unique().tolist()
        assert ran == [pytest.approx(0.1 * trial.params["batch_size"] / 16)]


def test_the_objective_refuses_a_measure_pruner_of_another_metric_or_several_objectives():
    study = _study(pruner=MeasurePruner())
    with pytest.raises(ConfigError, match="the objective's metric='test_error' is not accepted"):
        make_objective(SPACE, metric="test_error", **NQM)(study.ask())
    both = optuna.create_study(directions=["minimize", "minimize"], pruner=MeasurePruner())
    with pytest.raises(ConfigError, match="needs a single-objective study"):
        make_objective(SPACE, **NQM)(both.ask())
