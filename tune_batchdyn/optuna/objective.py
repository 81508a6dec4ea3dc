"""``objective`` / ``make_objective``: one Optuna trial = one ``run_trial`` under a sampled config.

A trial first refuses a ``MeasurePruner`` on a study that does not minimise one objective, or
whose metric is not the objective's, and skips itself,
untrained, if it is a duplicate of an enqueued configuration (``enqueue.skip_duplicate``).
The config is, later entries winning: the space's fixed values, the ``defaults`` (any
``TrialConfig`` field held fixed: ``epochs=3``, ``device="cpu"``), the values suggested for the
searched fields, and a rerouted trial's plan (``reroute.plan_overrides``). It is stored whole
as the user attribute ``config`` (``records.optuna_import``). Each epoch goes through
``TrialReporter``: record stored as a user attribute, ``trial.report(metric, epoch)``,
``optuna.TrialPruned`` when ``trial.should_prune()``; the pruner is also asked once before the
first epoch (``MeasurePruner`` judges the configuration there).

A config that a finished (complete) trial of the study already ran, RUN_ONLY_FIELDS aside, is
not trained again: samplers re-suggest categorical values, and the same config and seed give
the same trajectory. The trial returns that trial's final ``metric``, read from its records
(not the study's value of it, which a user's objective wrapping this one may have transformed),
and marks itself with its number (user attribute ``repeat_of``, no records);
``skip_duplicates=False`` trains it anyway. A ``FixedTrial`` (no study) is always trained.

Return value: the final epoch's ``metric`` (``val_error`` by default: the study never selects
on the test error). A trial that diverged returns its error rather than raising, so the
study keeps it as a complete (bad) result that samplers learn from: the last record's metric
when finite, else ``diverged_error`` (default 0.9, the chance-level error of ten classes, which
``FinalErrorPredictor`` also assigns to diverged trials; pass 0.99 for CIFAR-100, or a risk
above any reached for the NQM, whose "error" is a loss).

Example (NQM trials take milliseconds)::

    import optuna
    from tune_batchdyn.optuna import MeasurePruner, make_objective

    study = optuna.create_study(pruner=MeasurePruner())
    study.optimize(make_objective({"batch_size": [16, 64, 256], "lr": [0.1, 0.4]},
                                  dataset="nqm", model="nqm", epochs=8,
                                  dataset_options={"samples_per_epoch": 6400, "dim": 1000}),
                   n_trials=12)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
import pandas as pd

from tune_batchdyn.errors import ConfigError, check_choice
from tune_batchdyn.optuna.enqueue import skip_duplicate
from tune_batchdyn.optuna.pruner import MeasurePruner
from tune_batchdyn.optuna.reporter import METRICS, TrialReporter
from tune_batchdyn.optuna.reroute import plan_overrides
from tune_batchdyn.optuna.sampling import SpaceLike, TrialSpace, as_trial_space, suggest_config
from tune_batchdyn.records import CONFIG_ATTR, REPEAT_ATTR, records_from_optuna
from tune_batchdyn.train import TrialConfig, run_trial
from tune_batchdyn.train.config import RUN_ONLY_FIELDS, config_fields
from tune_batchdyn.train.engine import check_user_code

log = logging.getLogger("tune_batchdyn.optuna")

#: A diverged trial's value when its last metric is NaN: chance level with ten classes.
DIVERGED_ERROR = 0.9


def make_objective(space: SpaceLike = None, *, metric: str = "val_error",
                   diverged_error: float = DIVERGED_ERROR, skip_duplicates: bool = True,
                   check_code: bool = True,
                   **defaults: Any) -> Callable[[optuna.trial.Trial], float]:
    """The objective for ``study.optimize``, its space read and its arguments checked once
    (with ``check_code``, a user's dataset and model loaded and probed too:
    ``train.engine.check_user_code``; the sweep command passes False, having checked every
    combination of its space already)."""
    run = _objective(space, metric, diverged_error, skip_duplicates, defaults)
    if check_code:
        check_user_code(first_config(run.space, defaults))
    return run


class _Objective:
    """``make_objective``'s callable: one trial per call, the arguments checked at creation."""

    def __init__(self, space: TrialSpace, metric: str, diverged_error: float,
                 skip_duplicates: bool, defaults: dict[str, Any]) -> None:
        self.space, self.metric, self.diverged_error = space, metric, diverged_error
        self.skip_duplicates, self.defaults = skip_duplicates, defaults

    def __call__(self, trial: optuna.trial.Trial) -> float:
        study = getattr(trial, "study", None)  # a FixedTrial has none
        if study is not None and isinstance(study.pruner, MeasurePruner):
            study.pruner.check_direction(study.directions)
            study.pruner.check_metric(self.metric)
        config = trial_config(trial, self.space, self.defaults)
        trial.set_user_attr(CONFIG_ATTR, config.to_dict())
        earlier = (finished_with_config(study, config)
                   if self.skip_duplicates and study is not None else None)
        if earlier is not None:
            value = final_value(recorded_trajectory(earlier), self.metric, self.diverged_error)
            trial.set_user_attr(REPEAT_ATTR, earlier.number)
            log.debug("trial %d repeats finished trial %d's config: its final %s %.4f, not "
                      "trained again", trial.number, earlier.number, self.metric, value)
            return value
        reporter = TrialReporter(trial, self.metric, epochs=config.epochs)
        reporter.before_training()
        trajectory = run_trial(config, reporter)
        return final_value(trajectory, self.metric, self.diverged_error)


def _objective(space: SpaceLike, metric: str, diverged_error: float, skip_duplicates: bool,
               defaults: dict[str, Any]) -> _Objective:
    """The objective with its arguments checked (a bad default, such as a typo in
    ``model=...``, fails here), without running the user's code."""
    trial_space = as_trial_space(space)
    check_choice("metric", metric, METRICS)
    if isinstance(diverged_error, bool) or not isinstance(diverged_error, (int, float)) \
            or not math.isfinite(diverged_error):
        raise ConfigError(f"diverged_error must be a finite number, but got {diverged_error=}.")
    known = set(config_fields())
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise ConfigError(f"unknown TrialConfig field(s) {unknown} in the defaults; accepted "
                          f"fields: {sorted(known)}.")
    searched = sorted(set(defaults) & set(trial_space.distributions))
    if searched:
        raise ConfigError(f"field(s) {searched} are both searched by the space and fixed in the "
                          "defaults; keep each field in one place.")

    if not isinstance(skip_duplicates, bool):
        raise ConfigError(f"skip_duplicates must be True or False, but got {skip_duplicates=}.")
    check_choices(trial_space, defaults)
    return _Objective(trial_space, metric, diverged_error, skip_duplicates, defaults)


def objective(trial: optuna.trial.Trial, space: SpaceLike = None, *, metric: str = "val_error",
              diverged_error: float = DIVERGED_ERROR, skip_duplicates: bool = True,
              **defaults: Any) -> float:
    """Run one trial (see the module docstring); ``make_objective`` reads the space once and
    runs a user's code once before the first trial."""
    return _objective(space, metric, diverged_error, skip_duplicates, defaults)(trial)


def first_config(space: TrialSpace, defaults: dict[str, Any]) -> TrialConfig:
    """The config of the space's first choices (a range's low end) with ``defaults``."""
    return _config(space, defaults, _first_values(space))


def check_choices(space: TrialSpace, defaults: dict[str, Any]) -> None:
    """Check every choice of every searched field (a range: both ends), each with the other
    fields' first choices, when the objective is made: a bad default or choice is one error,
    not a failed trial each (the first config's error first). Linear in the choices, so a
    value that is bad only in combination with another is found by its trial."""
    first = _first_values(space)
    _config(space, defaults, first)
    for name, distribution in space.distributions.items():
        for value in _values(distribution)[1:]:
            try:
                _config(space, defaults, {**first, name: value})
            except ConfigError as err:
                raise ConfigError(f"space[{name!r}] choice {value!r}: {err}") from err


def _config(space: TrialSpace, defaults: dict[str, Any], values: dict[str, Any]) -> TrialConfig:
    return TrialConfig.from_dict({**space.constants, **defaults, **space.decode(values)})


def _first_values(space: TrialSpace) -> dict[str, Any]:
    return {name: _values(distribution)[0] for name, distribution in space.distributions.items()}


def _values(distribution: optuna.distributions.BaseDistribution) -> list[Any]:
    """A distribution's choices, or a range's two ends."""
    if hasattr(distribution, "choices"):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def finished_with_config(study: optuna.Study,
                         config: TrialConfig) -> optuna.trial.FrozenTrial | None:
    """The first complete trial that trained ``config`` (RUN_ONLY_FIELDS aside: a worker's
    device or data path does not change the trajectory), or ``None``."""
    wanted = _trajectory_fields(config.to_dict())
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        stored = trial.user_attrs.get(CONFIG_ATTR)
        if (REPEAT_ATTR not in trial.user_attrs and isinstance(stored, dict)
                and _trajectory_fields(stored) == wanted):
            return trial
    return None


def _trajectory_fields(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in RUN_ONLY_FIELDS}


def trial_config(trial: optuna.trial.Trial, space: TrialSpace,
                 defaults: dict[str, Any]) -> TrialConfig:
    """The trial's ``TrialConfig``: fixed values, defaults, suggestions, then a plan's overrides
    (the params a plan's trial suggests: ``sampling.suggest_config``). A duplicate of an
    enqueued configuration raises ``optuna.TrialPruned`` first (``enqueue.skip_duplicate``)."""
    skip_duplicate(trial)
    overrides = plan_overrides(trial)
    suggested = suggest_config(trial, space, overrides)
    return TrialConfig.from_dict({**space.constants, **defaults, **suggested, **overrides})


def recorded_trajectory(trial: optuna.trial.FrozenTrial) -> pd.DataFrame:
    """A finished trial's per-epoch records, read back from its user attributes."""
    return records_from_optuna([trial]).sort_values("epoch")


def final_value(trajectory: pd.DataFrame, metric: str, diverged_error: float) -> float:
    """The last epoch's ``metric``; ``diverged_error`` for a diverged trial whose metric is NaN."""
    value = float(trajectory[metric].iloc[-1])
    if math.isnan(value) and bool(trajectory["diverged"].any()):
        return float(diverged_error)
    return value
