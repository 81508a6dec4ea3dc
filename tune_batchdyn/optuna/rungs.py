"""``SuccessiveHalvingPruner``'s rungs, as the storage holds them.

Rung j is read at step s·η^j (s the minimum resource times η to the minimum early-stopping
rate, η the reduction factor). The pruner keeps a trial past rung j when its value there is
among the best 1/η of the values every trial reported at that rung, itself included:

    promoted  ⇔  value ≤ v₍m₎,  m = max(⌊n/η⌋, 1),  v₍m₎ the m-th lowest of the n values

(Optuna's ``_is_trial_promotable_to_next_rung``; the first η − 1 trials are compared with
the lowest). It stores each trial's value at rung j in the system attribute
``completed_rung_<j>`` (`rung_key`), so `rung_values` reads what it compares, and
`promotion_cutoff` is v₍m₎ for one more value. `stand_at_rung` stores a value for a trial
stopped before the rung: the rung's cutoff is a quantile of the values there, and a trial
stopped earlier for standing below it would otherwise leave the quantile to the better ones
and the rung stricter than it is alone. The settings are the pruner's private attributes
(Optuna keeps them so, up to 5.x); an ``"auto"`` minimum resource is estimated as the pruner
does, from the completed trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner, SuccessiveHalvingPruner
from optuna.trial import FrozenTrial, TrialState


def rung_key(index: int) -> str:
    """The system attribute holding a trial's value at rung ``index``."""
    return f"completed_rung_{index}"


@dataclass(frozen=True)
class Rungs:
    """Where the rungs are (rung 0's step, growing η-fold) and how they promote."""

    first_step: int
    reduction_factor: int
    bootstrap_count: int

    def step(self, index: int) -> int:
        """The step rung ``index``'s value is read at."""
        return self.first_step * self.reduction_factor ** index

    def index_at(self, step: int) -> int | None:
        """The rung read at ``step``, None between rungs."""
        index = 0
        while self.step(index) < step:
            index += 1
        return index if self.step(index) == step else None


def rungs(base: BasePruner, trials: list[FrozenTrial]) -> Rungs | None:
    """The rungs of a ``SuccessiveHalvingPruner`` (None for another pruner, or while an
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
    return Rungs(min_resource * factor ** base._min_early_stopping_rate, factor,
                 base._bootstrap_count)


def rung_values(trials: list[FrozenTrial], index: int) -> dict[int, float]:
    """Each trial's stored value at rung ``index``, by trial number."""
    key = rung_key(index)
    return {t.number: t.system_attrs[key] for t in trials if key in t.system_attrs}


def stand_at_rung(study: optuna.Study, trial: FrozenTrial, index: int, value: float) -> None:
    """Store ``value`` as the trial's value at rung ``index``, as the pruner stores one, for
    a trial stopped before it reached the rung, so the rung's later cutoffs count it."""
    study._storage.set_trial_system_attr(trial._trial_id, rung_key(index), value)


def promotion_cutoff(values: list[float], value: float, reduction_factor: int) -> float:
    """v₍m₎ of ``values`` and ``value`` together: ``value`` is promoted iff it is at most this."""
    competing = sorted([*values, value])
    return competing[max(len(competing) // reduction_factor, 1) - 1]
