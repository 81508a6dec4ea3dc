"""``TrialReporter``: ``run_trial``'s reporter for an Optuna trial.

Every epoch, in this order:

1. the record is stored as the user attribute ``record/{epoch:04d}`` (``records.optuna_import``:
   plain floats, ints and bools, since numpy scalars cannot be stored by the RDB storages), so
   any worker can rebuild the trial's trajectory from storage alone;
2. the metric (``val_error`` by default) is reported with ``trial.report(value, epoch)``; epochs
   count from 1, so a pruner's ``n_warmup_steps=2`` first judges a trial after its second epoch;
3. unless the record says the trial diverged, or it is the trial's last epoch (``epochs``),
   ``trial.should_prune()`` is asked and ``optuna.TrialPruned`` raised when it says so. After
   the last epoch the work is done: pruning then would only throw the trial's result away.

Before the first epoch, ``before_training()`` asks ``trial.should_prune()`` once, with no value
reported: ``MeasurePruner`` judges the trial's configuration there (a trial it prunes costs no
epoch); Optuna's built-in pruners have nothing to judge yet and say no.

A diverged epoch is stored and reported (its metric is NaN) but never pruned: training stops
there anyway and the objective returns the trial's error (``objective.final_value``). The final
call of ``run_trial`` (the last record with ``done=True``) is ignored: it repeats the last epoch.
The same reporter replays recorded trajectories (``optuna.replay``), so the benchmark exercises
the code path that live trials use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from tune_batchdyn.errors import check_choice
from tune_batchdyn.optuna.prune_reason import reason_text
from tune_batchdyn.records import (
    TABLE_EXTRA_COLUMNS,
    record_attr_name,
    record_user_attr,
    target_column,
)

#: Record columns a study can minimise (errors and the training loss).
METRICS: tuple[str, ...] = ("val_error", "test_error", "train_error", "train_loss")
#: The metrics whose final value the records table carries (``final_val_error``,
#: ``final_test_error``): the only ones ``MeasurePruner`` can predict and ``RerouteCallback``
#: can rank.
FINAL_METRICS: tuple[str, ...] = tuple(m for m in METRICS
                                       if target_column(m) in TABLE_EXTRA_COLUMNS)


class TrialReporter:
    """Store, report and prune one Optuna trial epoch by epoch (see the module docstring)."""

    def __init__(self, trial: optuna.trial.Trial, metric: str = "val_error",
                 epochs: int | None = None) -> None:
        check_choice("metric", metric, METRICS)
        self.trial = trial
        self.metric = metric
        self.epochs = epochs

    def before_training(self) -> None:
        """Ask the pruner once before the first epoch; ``optuna.TrialPruned`` if it says so."""
        if self.trial.should_prune():
            raise optuna.TrialPruned("pruned before training" + self._why())

    def __call__(self, record: Mapping[str, Any]) -> None:
        if record.get("done"):
            return
        epoch = int(record["epoch"])
        self.trial.set_user_attr(record_attr_name(epoch), record_user_attr(record))
        value = record.get(self.metric)
        self.trial.report(math.nan if value is None else float(value), epoch)
        if record.get("diverged") or (self.epochs is not None and epoch >= self.epochs):
            return
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}" + self._why())

    def _why(self) -> str:
        """`` by ...``: the reason the pruner wrote through the storage, past this Trial's
        own cache ("" for another pruner's)."""
        why = reason_text(self.trial.storage.get_trial_user_attrs(self.trial._trial_id))
        return f" {why}" if why else ""
