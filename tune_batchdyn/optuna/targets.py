"""Targets for Optuna's plots: a measure of a trial's last stored record.

Optuna's visualisations take ``target=`` (a function of a ``FrozenTrial``) to plot something other
than the objective value; ``measure_target("lk")`` reads LK from the trial's last record
(``record/{epoch:04d}`` user attributes), NaN when the trial has none or did not measure it.

Example::

    from optuna.visualization.matplotlib import plot_contour
    plot_contour(study, params=["batch_size", "lr"], target=measure_target("lk"),
                 target_name="LK")
"""

from __future__ import annotations

import math
from collections.abc import Callable

from optuna.trial import FrozenTrial

from tune_batchdyn.errors import check_choice
from tune_batchdyn.records import RECORD_ATTR_PREFIX, RECORD_COLUMNS


def measure_target(name: str) -> Callable[[FrozenTrial], float]:
    """A ``target=`` function returning record column ``name`` at the trial's last epoch."""
    check_choice("name", name, RECORD_COLUMNS)

    def target(trial: FrozenTrial) -> float:
        keys = sorted(k for k in trial.user_attrs if k.startswith(RECORD_ATTR_PREFIX))
        if not keys:
            return math.nan
        value = trial.user_attrs[keys[-1]].get(name)
        return math.nan if value is None else float(value)

    return target
