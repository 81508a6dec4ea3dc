"""``SuccessiveHalvingPruner``'s first rung, as the storage holds it.

The pruner keeps a trial past rung 0 when its value at the rung's step is among the best
1/η of the values every trial reported there, itself included (η the reduction factor):

    promoted  ⇔  value ≤ v₍m₎,  m = max(⌊n/η⌋, 1),  v₍m₎ the m-th lowest of the n values

(Optuna's ``_is_trial_promotable_to_next_rung``; the first η − 1 trials are compared with
the lowest). It stores each trial's rung value in the system attribute ``completed_rung_0``,
so `rung_values` reads what it compares, and `promotion_cutoff` is v₍m₎ for one more value.
`stand_at_rung` stores a value for a trial stopped before the rung: the rung's cutoff is a
quantile of the values there, and a trial stopped earlier for standing below it would
otherwise leave the quantile to the better ones and the rung stricter than it is alone.
The settings are the pruner's private attributes (Optuna keeps them so, up to 5.x); an
``"auto"`` minimum resource is estimated as the pruner does, from the completed trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.trial import FrozenTrial, TrialState

#: The system attribute holding a trial's value at rung 0.
RUNG_KEY = "completed_rung_0"


@dataclass(frozen=True)
class FirstRung:
    """Where rung 0 is (the step its value is read at) and how it promotes."""

    step: int
    reduction_factor: int
    bootstrap_count: int


def first_rung(base: BasePruner, trials: list[FrozenTrial]) -> FirstRung | None:
    """Rung 0 of a ``SuccessiveHalvingPruner`` (None for another pruner, or while an
    ``"auto"`` minimum resource has no completed trial to be estimated from)."""
    if not isinstance(base, SuccessiveHalvingPruner):
        return None
    min_resource = base._min_resource
    if min_resource is None:  # "auto": the last step of the longest completed trial / 100
        steps = [t.last_step for t in trials
                 if t.state == TrialState.COMPLETE and t.last_step is not None]
        if not steps:
            return None
        min_resource = max(max(steps) // 100, 1)
    factor = base._reduction_factor
    return FirstRung(min_resource * factor ** base._min_early_stopping_rate, factor,
                     base._bootstrap_count)


def rung_values(trials: list[FrozenTrial]) -> dict[int, float]:
    """Each trial's stored value at rung 0, by trial number."""
    return {t.number: t.system_attrs[RUNG_KEY] for t in trials if RUNG_KEY in t.system_attrs}


def stand_at_rung(study: optuna.Study, trial: FrozenTrial, value: float) -> None:
    """Store ``value`` as the trial's value at rung 0, as the pruner stores one, for a trial
    stopped before it reached the rung, so the rung's later cutoffs count it."""
    study._storage.set_trial_system_attr(trial._trial_id, RUNG_KEY, value)


def promotion_cutoff(values: list[float], value: float, reduction_factor: int) -> float:
    """v₍m₎ of ``values`` and ``value`` together: ``value`` is promoted iff it is at most this."""
    competing = sorted([*values, value])
    return competing[max(len(competing) // reduction_factor, 1) - 1]
