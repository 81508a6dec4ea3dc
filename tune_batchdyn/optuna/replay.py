"""Replay a records table through Optuna: recorded trials played back as live ones.

``enqueue_replay(study, records, order)`` enqueues one trial per recorded trial, in ``order``;
``replay_objective(records)`` is the objective that plays each back: it suggests the recorded
configuration (every config field that varies across the table, as a categorical over the
table's values, fixed by the queue), stores the config, asks the pruner before training as a
live trial does, then feeds the recorded epochs to the same ``TrialReporter`` a live trial uses
(record stored, value reported, pruner asked) and returns the final value as ``objective``
would. So a pruner sees exactly what it would have seen live, at no training cost:
``benchmarks/pruners.py`` compares pruners this way, and tests build studies of realistic
trials in milliseconds.

Example::

    study = optuna.create_study(pruner=MeasurePruner())
    order = enqueue_replay(study, records)
    study.optimize(replay_objective(records), n_trials=len(order))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.optuna.objective import DIVERGED_ERROR, final_value
from tune_batchdyn.optuna.reporter import TrialReporter
from tune_batchdyn.records import (
    CONFIG_ATTR,
    CONFIG_PREFIX,
    RECORD_COLUMNS,
    config_columns,
    validate_table,
)

#: User attribute naming the recorded trial a replayed trial plays back.
REPLAY_ATTR = "replay/trial_id"


def enqueue_replay(study: optuna.Study, records: pd.DataFrame,
                   order: Sequence[str] | None = None) -> list[str]:
    """Enqueue the recorded trials ``order`` (default: all, in table order); returns the order."""
    validate_table(records)
    known = list(dict.fromkeys(records["trial_id"].astype(str)))
    order = known if order is None else [str(t) for t in order]
    missing = sorted(set(order) - set(known))
    if missing:
        raise ConfigError(f"order names trial(s) {missing[:5]} that the records do not hold.")
    choices = _param_choices(records)
    firsts = records.assign(trial_id=records["trial_id"].astype(str)).groupby("trial_id").first()
    for trial_id in order:
        params = {name: _plain(firsts.at[trial_id, f"{CONFIG_PREFIX}{name}"]) for name in choices}
        study.enqueue_trial(params, user_attrs={REPLAY_ATTR: trial_id})
    return order


def replay_objective(records: pd.DataFrame, *, metric: str = "val_error",
                     diverged_error: float = DIVERGED_ERROR
                     ) -> Callable[[optuna.trial.Trial], float]:
    """The objective that plays back the recorded trial named by the trial's ``replay/trial_id``."""
    validate_table(records)
    choices = _param_choices(records)
    table = records.assign(trial_id=records["trial_id"].astype(str)).sort_values(
        ["trial_id", "epoch"])
    trajectories = {tid: rows.loc[:, list(RECORD_COLUMNS)].reset_index(drop=True)
                    for tid, rows in table.groupby("trial_id", sort=False)}
    configs = {tid: _config(rows.iloc[0], config_columns(table))
               for tid, rows in table.groupby("trial_id", sort=False)}

    def run(trial: optuna.trial.Trial) -> float:
        trial_id = trial.user_attrs.get(REPLAY_ATTR)
        if trial_id not in trajectories:
            raise ConfigError(f"trial {trial.number} has {REPLAY_ATTR}={trial_id!r}, not a "
                              "recorded trial; enqueue trials with enqueue_replay first.")
        for name, values in choices.items():
            trial.suggest_categorical(name, values)
        trial.set_user_attr(CONFIG_ATTR, configs[trial_id])
        trajectory = trajectories[trial_id]
        epochs = configs[trial_id].get("epochs")
        if not isinstance(epochs, (int, float)) or epochs != epochs:  # absent or NaN
            epochs = len(trajectory)
        reporter = TrialReporter(trial, metric, epochs=int(epochs))
        reporter.before_training()
        for record in trajectory.to_dict("records"):
            reporter(record)
        return final_value(trajectory, metric, diverged_error)

    return run


def _param_choices(records: pd.DataFrame) -> dict[str, list[Any]]:
    """Config fields that vary across the table (and have no missing value): their values."""
    choices = {}
    for column in config_columns(records):
        values = records[column]
        if values.isna().any() or values.nunique() < 2:
            continue
        plain = sorted({_plain(v) for v in values.unique()}, key=lambda v: (str(type(v)), v))
        choices[column[len(CONFIG_PREFIX):]] = plain
    return choices


def _config(row: pd.Series, columns: list[str]) -> dict[str, Any]:
    """The nested config of one recorded trial from its ``config/...`` columns."""
    config: dict[str, Any] = {}
    for column in columns:
        *parents, leaf = column[len(CONFIG_PREFIX):].split("/")
        node = config
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _plain(row[column])
    return config


def _plain(value: Any) -> Any:
    """A table cell as a plain Python value (numpy scalars cannot be stored; NaN is None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
