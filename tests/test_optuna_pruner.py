"""MeasurePruner, in the pattern of Optuna's tests/pruners_tests: a study with the pruner, a
trial asked, values reported (with the records ``TrialReporter`` stores), ``should_prune``
asserted. Finished trials come from a planted synthetic records table replayed through the
study; expected decisions are recomputed from the table itself, without Optuna."""

from __future__ import annotations

import math
import re

import numpy as np
import optuna
import pandas as pd
import pytest

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna import (
    BEACON_ATTR,
    PLAN_ATTR,
    PRUNE_REASON_ATTR,
    MeasurePruner,
    enqueue_beacon,
    enqueue_replay,
    open_study,
    reason_text,
    replay_objective,
)
from tune_batchdyn.optuna import pruner as pruner_module
from tune_batchdyn.optuna.rungs import promotion_cutoff, rung_key, rungs
from tune_batchdyn.predict import FinalErrorPredictor
from tune_batchdyn.predict.configuration_bound import ConfigurationBound
from tune_batchdyn.predict.synthetic import synthetic_records
from tune_batchdyn.records import CONFIG_ATTR, record_attr_name, record_user_attr

optuna.logging.set_verbosity(optuna.logging.WARNING)


def bound_only(**kwargs) -> MeasurePruner:
    """MeasurePruner without a base pruner's rungs: the conformal bound alone decides."""
    return MeasurePruner(base=optuna.pruners.NopPruner(), **kwargs)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_records(n_configs=24, n_seeds=1, epochs=10, seed=3, diverging=0.0)


def _ids(table: pd.DataFrame) -> list[str]:
    """Trial ids, the three best and three worst final val errors last (the running ones)."""
    ranked = list(table.groupby("trial_id")["final_val_error"].last().sort_values().index)
    running = ranked[:3] + ranked[-3:]
    return [t for t in dict.fromkeys(table["trial_id"]) if t not in running] + running


def _study(pruner: optuna.pruners.BasePruner, table: pd.DataFrame | None = None,
           ids: list[str] | None = None) -> optuna.Study:
    """A study whose completed trials replay ``ids`` of ``table`` (pruning off while filling)."""
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    if table is not None and ids:
        enqueue_replay(study, table, ids)
        study.optimize(replay_objective(table), n_trials=len(ids))
    study.pruner = pruner
    return study


def _running(study: optuna.Study, rows: pd.DataFrame, epochs: int = 10) -> optuna.trial.Trial:
    """Ask a trial and report ``rows`` as TrialReporter does (records, then values)."""
    trial = study.ask()
    trial.set_user_attr(CONFIG_ATTR, {"lr": float(rows["config/lr"].iloc[0]), "epochs": epochs})
    for record in rows.to_dict("records"):
        trial.set_user_attr(record_attr_name(record["epoch"]), record_user_attr(record))
        trial.report(float(record["val_error"]), int(record["epoch"]))
    return trial


def _rows(table: pd.DataFrame, trial_id: str, epochs: int) -> pd.DataFrame:
    rows = table[table["trial_id"] == trial_id]
    return rows[rows["epoch"] <= epochs]


def _expected(table: pd.DataFrame, finished: list[str], rows: pd.DataFrame, k: int,
              confidence: float) -> tuple[bool, float]:
    """The bound's rule recomputed from the table: (decision, its margin; NaN: no bound)."""
    reference = table[table["trial_id"].isin(finished)]
    bound = FinalErrorPredictor(target="final_val_error").fit(reference).lower_bound(
        rows.assign(trial_id="running"), confidence)
    finals = sorted(reference.groupby("trial_id")["final_val_error"].last())
    margin = bound - finals[k - 1]
    return margin > 0, margin


def test_decision_follows_the_predictor_and_the_kth_best(table):
    ids = _ids(table)
    finished, running = ids[:18], ids[18:]
    finals = sorted(table[table["trial_id"].isin(finished)]
                    .groupby("trial_id")["final_val_error"].last())
    for k, confidence in ((1, 0.9), (3, 0.6)):
        study = _study(bound_only(k=k, confidence=confidence), table, finished)
        decisions = []
        for trial_id in running:
            rows = _rows(table, trial_id, 3)
            expected, margin = _expected(table, finished, rows, k, confidence)
            if abs(margin) < 1e-6:
                continue
            trial = _running(study, rows)
            assert trial.should_prune() is expected, trial_id
            decisions.append(expected)
            # why, stored with the trial: the bound and the rival it was compared with
            reason = study._storage.get_trial(trial._trial_id).user_attrs.get(PRUNE_REASON_ATTR)
            if not expected:
                assert reason is None
                continue
            assert reason == {"by": "bound", "lower_bound": pytest.approx(finals[k - 1] + margin),
                              "rival": finals[k - 1], "k": k, "confidence": confidence}
        assert True in decisions and False in decisions


def test_a_fresh_pruner_decides_like_a_long_lived_one(table):
    """Workers rebuild the same decision from storage: the memo never changes an answer."""
    ids = _ids(table)
    long_lived = bound_only()
    study = _study(long_lived, table, ids[:10])
    rows = _rows(table, ids[20], 4)
    first = _running(study, rows).should_prune()
    enqueue_replay(study, table, ids[10:18])
    study.pruner = optuna.pruners.NopPruner()
    study.optimize(replay_objective(table), n_trials=8)
    trial = _running(study, rows)
    for pruner in (long_lived, bound_only()):
        study.pruner = pruner
        assert trial.should_prune() is _expected(table, ids[:18], rows, 1, 0.9)[0]
    assert first is _expected(table, ids[:10], rows, 1, 0.9)[0]


def test_startup_leaves_the_decision_to_the_base(table):
    ids = _ids(table)
    hopeless = _rows(table, ids[20], 3).assign(val_error=0.95)
    always = optuna.pruners.ThresholdPruner(upper=0.0)
    study = _study(MeasurePruner(n_startup_trials=5, base=always), table, ids[:4])
    assert _running(study, hopeless).should_prune() is True
    study.pruner = bound_only(n_startup_trials=5)
    assert _running(study, hopeless).should_prune() is False


def test_too_few_completed_trials_for_the_confidence_leave_it_to_the_base(table):
    """Eight completed trials cannot vouch for 0.9 (the conformal rank 9 exceeds 8): the
    base decides alone; nine can, and the bound prunes too."""
    ids = _ids(table)
    hopeless = _rows(table, ids[-1], 3)
    assert math.isnan(_expected(table, ids[:8], hopeless, 1, 0.9)[1])
    study = _study(bound_only(), table, ids[:8])
    assert _running(study, hopeless).should_prune() is False
    study.pruner = MeasurePruner(base=optuna.pruners.ThresholdPruner(upper=0.0))
    assert _running(study, hopeless).should_prune() is True
    decision, margin = _expected(table, ids[:9], hopeless, 1, 0.9)
    assert decision is True and margin > 1e-3
    nine = _study(bound_only(), table, ids[:9])
    assert _running(nine, hopeless).should_prune() is True


def test_the_base_prunes_even_where_the_bound_would_keep_the_trial(table):
    ids = _ids(table)
    best = _rows(table, ids[18], 3)  # the best final val error of the table
    assert _expected(table, ids[:18], best, 1, 0.9)[0] is False
    study = _study(bound_only(), table, ids[:18])
    assert _running(study, best).should_prune() is False
    study.pruner = MeasurePruner(base=optuna.pruners.ThresholdPruner(upper=0.0))
    trial = _running(study, best)
    assert trial.should_prune() is True
    stored = study._storage.get_trial(trial._trial_id).user_attrs
    assert stored[PRUNE_REASON_ATTR] == {"by": "ThresholdPruner"}


def test_default_base_is_successive_halving():
    """Before the bound can be given, the default decides exactly like Optuna's
    SuccessiveHalvingPruner on the same reports (rungs kept in the trials' storage)."""
    values = (0.3, 0.1, 0.4, 0.2, 0.25, 0.05, 0.5, 0.15)

    def decisions(pruner: optuna.pruners.BasePruner) -> list[bool]:
        study, made = _study(pruner), []
        for value in values:
            trial = study.ask()
            trial.report(value, 1)
            made.append(trial.should_prune())
            study.tell(trial, value)
        return made

    ours = decisions(MeasurePruner(n_startup_trials=20))
    assert ours == decisions(optuna.pruners.SuccessiveHalvingPruner())
    assert True in ours and False in ours


def test_warmup(table):
    ids = _ids(table)
    study = _study(bound_only(n_warmup_steps=3), table, ids[:18])
    hopeless = _rows(table, ids[-1], 3)
    assert _running(study, hopeless.iloc[:2]).should_prune() is False
    assert _running(study, hopeless).should_prune() is True


def test_rerouted_trials_are_spared_unless_asked(table):
    ids = _ids(table)
    study = _study(bound_only(), table, ids[:18])
    hopeless = _rows(table, ids[-1], 3)
    plan = {"strategy": "s16-to-64", "batch_size": 16, "lr": 0.1}
    trial = _running(study, hopeless)
    trial.set_user_attr(PLAN_ATTR, plan)
    assert trial.should_prune() is False
    study.pruner = bound_only(prune_plans=True)
    assert trial.should_prune() is True


def test_beacons_are_spared_by_the_bound_and_the_base_unless_asked(table):
    """A beacon enqueued by enqueue_beacon runs to the end, also where the base's rungs would
    stop it; a trial of the same params enqueued plainly does not."""
    ids = _ids(table)
    hopeless = _rows(table, ids[-1], 3)
    lr = float(hopeless["config/lr"].iloc[0])
    study = _study(MeasurePruner(base=optuna.pruners.ThresholdPruner(upper=0.0)), table,
                   ids[:18])
    enqueue_beacon(study, {"batch_size": 32, "lr": lr})
    beacon = _running(study, hopeless)
    assert beacon.user_attrs[BEACON_ATTR] is True
    assert beacon.should_prune() is False
    study.enqueue_trial({"batch_size": 32, "lr": lr})
    assert _running(study, hopeless).should_prune() is True
    study.pruner = bound_only(prune_beacons=True)
    assert beacon.should_prune() is True


def test_no_step_reported_continues(table):
    study = _study(bound_only(n_warmup_steps=0), table, _ids(table)[:8])
    assert study.ask().should_prune() is False


def test_diverged_trial_is_predicted_at_chance_and_pruned(table):
    ids = _ids(table)
    study = _study(bound_only(), table, ids[:18])
    rows = _rows(table, ids[20], 2).copy()
    rows.loc[rows.index[-1], ["val_error", "test_error", "ck_bar", "lk"]] = math.nan
    rows.loc[rows.index[-1], "diverged"] = True
    assert _running(study, rows).should_prune() is True


def test_nan_values_are_filled_not_pruned_for(table):
    """A NaN val error is filled by the finished trials' median: the decision equals the
    independent predictor's on the same rows; where the predictor cannot bound the trial
    (its cold start) the base decides alone, with its own NaN rule."""
    ids = _ids(table)
    study = _study(bound_only(), table, ids[:18])
    for trial_id in ids[18:24]:
        rows = _rows(table, trial_id, 3).assign(val_error=math.nan)
        expected, margin = _expected(table, ids[:18], rows, 1, 0.9)
        if abs(margin) > 1e-6:
            assert _running(study, rows).should_prune() is expected
    # cold-start predictor (fewer finished trials than its min_finished) and no val error
    rows = _rows(table, ids[20], 3).assign(val_error=math.nan)
    few = _study(bound_only(n_startup_trials=2), table, ids[:3])
    assert _running(few, rows).should_prune() is False
    median = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    few.pruner = MeasurePruner(n_startup_trials=2, base=median)  # all values NaN: pruned
    assert _running(few, rows).should_prune() is True


def test_trial_without_records_goes_to_the_base(table):
    study = _study(MeasurePruner(base=optuna.pruners.ThresholdPruner(upper=0.5)), table,
                   _ids(table)[:8])
    low, high = study.ask(), study.ask()
    low.report(0.1, 2)
    high.report(0.9, 2)
    assert low.should_prune() is False
    assert high.should_prune() is True


def test_maximize_study_is_refused(table):
    study = optuna.create_study(direction="maximize", pruner=MeasurePruner())
    trial = study.ask()
    trial.report(0.5, 1)
    with pytest.raises(ConfigError, match="minimize"):
        trial.should_prune()


def test_multi_objective_study_is_refused_by_name():
    """Not Optuna's RuntimeError of study.direction: the check takes study.directions."""
    study = optuna.create_study(directions=["minimize", "minimize"], pruner=MeasurePruner())
    message = (r"directions=\['minimize', 'minimize'\] is not accepted with MeasurePruner, "
               "which predicts one error: it needs a single-objective study")
    with pytest.raises(ConfigError, match=message):
        MeasurePruner.check_direction(study.directions)
    study.ask()
    with pytest.raises(ConfigError, match=message):
        study.pruner.prune(study, study.trials[-1])
    MeasurePruner.check_direction(optuna.create_study().directions)


def test_the_objectives_metric_must_be_the_pruners():
    pruner = MeasurePruner(metric="test_error")
    assert pruner.metric == "test_error"
    pruner.check_metric("test_error")
    with pytest.raises(ConfigError, match=r"the objective's metric='train_loss' is not accepted "
                                          r"with MeasurePruner\(metric='test_error'\)"):
        pruner.check_metric("train_loss")


class _MeanFinal:
    """A predictor whose bound is the mean final val error of the trials it was fitted on."""

    def fit(self, records: pd.DataFrame) -> _MeanFinal:
        self.mean_ = float(records.groupby("trial_id")["final_val_error"].last().mean())
        return self

    def lower_bound(self, rows: pd.DataFrame, confidence: float) -> float:
        return self.mean_


def test_a_pruner_reused_for_another_study_of_the_same_name_fits_that_study(table):
    """Two in-memory studies both named "bs-lr", their completed trials numbered 0..5 alike:
    the second study's decision uses its own predictor, not the first's memo. The first study
    holds the worst trials, so its mean final error exceeds every trial of the second's."""
    finals = table.groupby("trial_id")["final_val_error"].last().sort_values()
    best, worst = list(finals.index[:6]), list(finals.index[-6:])
    pruner = MeasurePruner(k=6, n_startup_trials=6, base=optuna.pruners.NopPruner(),
                           predictor=_MeanFinal())
    decisions = []
    for ids in (worst, best):
        study = optuna.create_study(study_name="bs-lr", pruner=optuna.pruners.NopPruner())
        enqueue_replay(study, table, ids)
        study.optimize(replay_objective(table), n_trials=len(ids))
        study.pruner = pruner
        decisions.append(_running(study, _rows(table, ids[0], 3)).should_prune())
    assert finals[worst].mean() > finals[best].max()
    assert decisions == [False, False]  # the mean of six finals is below the sixth best


def test_open_study_refuses_maximize_with_the_pruner_before_making_the_study(tmp_path):
    journal = tmp_path / "study.journal"
    with pytest.raises(ConfigError, match="direction='maximize' is not accepted with "
                                          "MeasurePruner, which predicts errors"):
        open_study(journal, "up", direction="maximize", pruner=MeasurePruner())
    assert not journal.exists()
    open_study(journal, "up", direction="maximize", pruner=optuna.pruners.MedianPruner())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 0}, "k=0"),
    ({"confidence": 1.0}, "confidence=1.0"),
    ({"confidence": 0.4}, "confidence=0.4"),
    ({"k": 3, "n_startup_trials": 2}, "n_startup_trials=2"),
    ({"n_warmup_steps": -1}, "n_warmup_steps=-1"),
    ({"base": "median"}, "base='median'"),
    ({"metric": "ck_bar"}, "metric='ck_bar'"),
    ({"metric": "train_loss"}, "metric='train_loss' is not accepted by MeasurePruner; use one "
                               "of: 'val_error', 'test_error'"),
    ({"metric": "train_error"}, "metric='train_error' is not accepted"),
    ({"predictor": object()}, "predictor="),
    ({"prune_plans": "yes"}, "prune_plans='yes'"),
    ({"prune_beacons": 1}, "prune_beacons=1"),
])
def test_arguments_are_checked_once_with_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MeasurePruner(**kwargs)


def _table_config(table: pd.DataFrame, trial_id: str) -> dict:
    """The config a replayed trial of ``table`` stores (``config/...`` columns)."""
    first = table[table["trial_id"] == trial_id].iloc[0]
    return {name[len("config/"):]: (value.item() if hasattr(value, "item") else value)
            for name, value in first.items() if name.startswith("config/")}


def _untrained(study: optuna.Study, config: dict) -> optuna.trial.Trial:
    """A trial asked with its config stored and nothing reported: before training."""
    trial = study.ask()
    trial.set_user_attr(CONFIG_ATTR, config)
    return trial


def test_a_configuration_is_judged_before_training(table):
    """No step reported: the configuration's bound among the completed trials (its peers),
    recomputed by the predictor from the table, against the best; the reason stored."""
    ids = _ids(table)
    finished = ids[:18]
    reference = table[table["trial_id"].isin(finished)]
    predictor = FinalErrorPredictor(target="final_val_error").fit(reference)
    best = reference.groupby("trial_id")["final_val_error"].last().min()
    study = _study(MeasurePruner(), table, finished)
    _assert_judged_untrained(study, table, ids[18:], lambda config: (
        predictor.config_lower_bound(config["lr"], config["batch_size"], 0.9), best,
        {"by": "configuration", "k": 1}))


def _assert_judged_untrained(study: optuna.Study, table: pd.DataFrame, trial_ids: list[str],
                             judge, pruned=None) -> None:
    """Each configuration of ``trial_ids``, asked untrained, is pruned exactly when its bound
    is above its rival (``judge(config)``: bound, rival and the reason's other fields), with
    that reason stored (then ``pruned(frozen trial, bound)`` is called); both decisions
    occur."""
    decisions = []
    for trial_id in trial_ids:
        config = _table_config(table, trial_id)
        bound, rival, fields = judge(config)
        trial = _untrained(study, config)
        assert trial.should_prune() is bool(bound > rival), trial_id
        decisions.append(bool(bound > rival))
        frozen = study._storage.get_trial(trial._trial_id)
        assert frozen.user_attrs.get(PRUNE_REASON_ATTR) == (None if bound <= rival else {
            **fields, "lower_bound": pytest.approx(bound), "rival": rival, "confidence": 0.9})
        if bound > rival and pruned is not None:
            pruned(frozen, bound)
    assert True in decisions and False in decisions


def test_only_a_fixed_batch_configuration_with_peers_is_judged_before_training(table):
    ids = _ids(table)
    study = _study(MeasurePruner(), table, ids[:18])
    hopeless = _table_config(table, ids[-1])
    assert _untrained(study, hopeless).should_prune() is True
    # seeds and run-only fields may differ from the peers'
    assert _untrained(study, {**hopeless, "seed": 7, "device": "cuda"}).should_prune() is True
    # another momentum: no completed trial is comparable on lr and batch size alone
    assert _untrained(study, {**hopeless, "momentum": 0.5}).should_prune() is False
    # a schedule's mean batch size is known only once it ran
    assert _untrained(study, {**hopeless, "strategy": "s16-to-64"}).should_prune() is False
    # n_warmup_steps=1: first judged after the first epoch
    study.pruner = MeasurePruner(n_warmup_steps=1)
    assert _untrained(study, hopeless).should_prune() is False
    # too few peers for the confidence
    few = _study(MeasurePruner(), table, ids[:8])
    assert _untrained(few, hopeless).should_prune() is False


def test_a_fresh_pruner_judges_a_configuration_like_a_long_lived_one(table):
    """The configuration's bound is refitted when the completed trials change (another
    worker's), as the running trials' bound is: the memo never changes an answer."""
    ids = _ids(table)
    long_lived = MeasurePruner()
    study = _study(long_lived, table, ids[:8])  # too few to vouch for 0.9: no prune
    configs = [_table_config(table, trial_id) for trial_id in ids[18:]]
    before = [_untrained(study, config).should_prune() for config in configs]
    enqueue_replay(study, table, ids[8:18])
    study.pruner = optuna.pruners.NopPruner()
    study.optimize(replay_objective(table), n_trials=10)
    after = {}
    for pruner in (long_lived, MeasurePruner()):
        study.pruner = pruner
        after[pruner] = [_untrained(study, config).should_prune() for config in configs]
    assert before == [False] * 6
    assert after[long_lived] == after[study.pruner] == [False] * 3 + [True] * 3


def _filled(pruner: optuna.pruners.BasePruner, table: pd.DataFrame,
            ids: list[str]) -> optuna.Study:
    study = optuna.create_study(pruner=pruner)
    enqueue_replay(study, table, ids)
    study.optimize(replay_objective(table), n_trials=len(ids))
    return study


def _rung_bound(trials: list[optuna.trial.FrozenTrial], numbers: list[int],
                values: dict[int, float]) -> ConfigurationBound:
    settings = [trials[n].user_attrs[CONFIG_ATTR] for n in numbers]
    return ConfigurationBound.fit([c["lr"] for c in settings],
                                  [c["batch_size"] for c in settings],
                                  [values[n] for n in numbers])


@pytest.mark.parametrize("latest", [500, 12])
def test_a_configuration_is_judged_on_its_first_rung_before_training(table, latest,
                                                                       monkeypatch):
    """No step reported, too few completed trials for the final value's bound: the bound of
    the epoch-1 value, from the trials SuccessiveHalving stored one for, against the value its
    first rung promotes (the m-th lowest with this one, m = max(n // 4, 1)); the bound from
    the latest ``RUNG_PEERS`` peers only. A trial pruned so stands at the rung with its bound,
    counted in later cutoffs but not learnt from."""
    ids = _ids(table)
    study = _filled(optuna.pruners.SuccessiveHalvingPruner(min_resource=1), table, ids[:18])
    trials = study.get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) < 9
    values = {t.number: t.system_attrs["completed_rung_0"] for t in trials
              if "completed_rung_0" in t.system_attrs}
    assert len(values) >= 9
    for number, value in values.items():  # what the rung compares: the epoch-1 val error
        assert value == study.trials[number].intermediate_values[1]
    fitted = _rung_bound(trials, sorted(values)[-latest:], values)
    monkeypatch.setattr(pruner_module, "RUNG_PEERS", latest)
    study.pruner = MeasurePruner(base=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))

    def judge(config: dict) -> tuple:
        bound = fitted.lower_bound(config["lr"], config["batch_size"], 0.9)
        competing = sorted([*values.values(), bound])
        return (bound, competing[max(len(competing) // 4, 1) - 1],
                {"by": "rung", "rung": 0, "step": 1})

    def stands_at_the_rung(trial: optuna.trial.FrozenTrial, bound: float) -> None:
        """A trial pruned so counts at the rung with its bound (not a peer: no value)."""
        assert trial.system_attrs[rung_key(0)] == pytest.approx(bound)
        values[trial.number] = trial.system_attrs[rung_key(0)]

    _assert_judged_untrained(study, table, ids[18:], judge, stands_at_the_rung)


def test_the_first_rung_is_judged_only_under_successive_halving_on_error_values(table):
    ids = _ids(table)
    study = _filled(optuna.pruners.SuccessiveHalvingPruner(min_resource=1), table, ids[:18])
    hopeless = _table_config(table, ids[-1])
    study.pruner = MeasurePruner(base=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    trial = _untrained(study, hopeless)
    assert trial.should_prune() is True
    said = reason_text(study._storage.get_trial(trial._trial_id).user_attrs)
    assert re.fullmatch(r"by the bound at rung 0 \(step 1\): lower_bound=0\.\d+ > "
                        r"rival=0\.\d+, the value that rung promotes, confidence 0\.9",
                        said), said
    # another base pruner has no such rung
    study.pruner = MeasurePruner(base=optuna.pruners.MedianPruner())
    assert _untrained(study, hopeless).should_prune() is False
    # "auto" min_resource: estimated from the completed trials, as the base does (step 1)
    study.pruner = MeasurePruner()
    assert _untrained(study, hopeless).should_prune() is True
    # a value that is no error (a loss above 1): not judged
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 1.7},
        user_attrs={CONFIG_ATTR: hopeless}, system_attrs={rung_key(0): 1.7}))
    assert _untrained(study, hopeless).should_prune() is False
    # too few trials reached the rung to vouch for 0.9
    few = _filled(optuna.pruners.SuccessiveHalvingPruner(min_resource=1), table, ids[:9])
    few.pruner = MeasurePruner(base=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    assert _untrained(few, hopeless).should_prune() is False


def test_a_promoted_trial_is_judged_on_the_next_rung(monkeypatch):
    """At rung 0's step, once SuccessiveHalving (η = 2) promoted it: the bound of the value at
    rung 1 (step 2), from the peers that reached it, against the value rung 1 promotes; a trial
    pruned so stands at rung 1 with its bound. A trial the rung stops is not judged so."""
    table = synthetic_records(n_configs=48, n_seeds=2, epochs=10, seed=4, diverging=0.0)
    ids = list(dict.fromkeys(table["trial_id"]))
    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = _filled(halving, table, ids[:48])
    study.pruner = MeasurePruner(base=halving)
    monkeypatch.setattr(pruner_module, "_completed", lambda study: [])  # no final-value bound
    decisions = []
    for trial_id in ids[48:]:
        trials = study.get_trials()
        values = {t.number: t.system_attrs[rung_key(1)] for t in trials
                  if rung_key(1) in t.system_attrs}
        peers = sorted(n for n in values if (trials[n].last_step or 0) >= 2)
        config = _table_config(table, trial_id)
        trial = _untrained(study, config)
        rows = _rows(table, trial_id, 1)
        trial.set_user_attr(record_attr_name(1), record_user_attr(rows.iloc[0].to_dict()))
        trial.report(float(rows["val_error"].iloc[0]), 1)
        pruned = trial.should_prune()
        frozen = study._storage.get_trial(trial._trial_id)
        reason = frozen.user_attrs.get(PRUNE_REASON_ATTR, {})
        if reason.get("by") == "SuccessiveHalvingPruner":
            assert rung_key(1) not in frozen.system_attrs
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        assert rung_key(0) in frozen.system_attrs  # promoted past rung 0
        assert len(peers) >= 9
        bound = _rung_bound(trials, peers, values).lower_bound(
            config["lr"], config["batch_size"], 0.9)
        rival = promotion_cutoff(list(values.values()), bound, 2)
        assert pruned is bool(bound > rival), trial_id
        decisions.append(pruned)
        if pruned:
            assert reason == {"by": "rung", "rung": 1, "step": 2, "lower_bound":
                              pytest.approx(bound), "rival": rival, "confidence": 0.9}
            assert frozen.system_attrs[rung_key(1)] == pytest.approx(bound)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        for epoch in (2, 3):  # to rung 1's step and past it, as it trains on
            rows = _rows(table, trial_id, epoch)
            trial.set_user_attr(record_attr_name(epoch), record_user_attr(rows.iloc[-1].to_dict()))
            trial.report(float(rows["val_error"].iloc[-1]), epoch)
            if trial.should_prune():
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert True in decisions and False in decisions


def test_rungs_are_read_where_successive_halving_reads_them():
    """Rung j at min_resource · η^(min_early_stopping_rate + j); no rung between them."""
    ladder = rungs(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=2, reduction_factor=3, min_early_stopping_rate=1), [])
    assert [ladder.step(j) for j in range(3)] == [6, 18, 54]
    assert [ladder.index_at(step) for step in (1, 6, 7, 17, 18, 54)] == [
        None, 0, None, None, 1, 2]
    assert rungs(optuna.pruners.MedianPruner(), []) is None
    assert rungs(optuna.pruners.SuccessiveHalvingPruner(), []) is None  # "auto", none completed


@pytest.mark.parametrize("reduction_factor", [2, 3, 4])
def test_promotion_cutoff_is_successive_halvings_own_decision(reduction_factor):
    """A value above ``promotion_cutoff`` is pruned at rung 0 by SuccessiveHalvingPruner
    itself, one at or below it is promoted, for every count of earlier rung values."""
    generator = np.random.default_rng(0)
    for n in range(12):
        earlier = [float(v) for v in generator.uniform(0.1, 0.9, n)]
        for value in [*earlier, *generator.uniform(0.05, 0.95, 4)]:
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=reduction_factor)
            study = optuna.create_study(pruner=pruner)
            for rung_value in earlier:
                study.add_trial(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.PRUNED, intermediate_values={1: rung_value},
                    system_attrs={rung_key(0): rung_value}))
            trial = study.ask()
            trial.report(float(value), 1)
            cutoff = promotion_cutoff(earlier, float(value), reduction_factor)
            assert trial.should_prune() is bool(value > cutoff), (n, value)
