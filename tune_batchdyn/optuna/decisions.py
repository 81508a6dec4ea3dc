"""What the plugin decided in a study, counted from storage: pruned trials and enqueued plans.

``decisions_line(study)`` is the summary that the CLI and the examples print once, at the end
of ``study.optimize``: ``decisions: pruned=<n> enqueued=<n>``. ``pruned`` counts trials in
``TrialState.PRUNED``, except trials skipped untrained (``enqueue.skipped``: duplicates of an
enqueued configuration that another trial holds, and a grid sweep's trials drawn from an empty
queue); ``enqueued``
counts distinct plans (``reroute/key``), so a plan two workers enqueued at the same instant
counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from tune_batchdyn.optuna.enqueue import skipped
from tune_batchdyn.optuna.reroute import PLAN_KEY_ATTR


@dataclass(frozen=True)
class Decisions:
    """Trials pruned and plans enqueued in one study."""

    pruned: int
    enqueued: int


def count_decisions(study: Any) -> Decisions:
    """Count the study's decisions (anything with ``get_trials()``: a study, any storage)."""
    trials = study.get_trials(deepcopy=False)
    pruned = sum(1 for t in trials
                 if t.state == TrialState.PRUNED and not skipped(t))
    plans = {t.user_attrs[PLAN_KEY_ATTR] for t in trials if PLAN_KEY_ATTR in t.user_attrs}
    return Decisions(pruned=pruned, enqueued=len(plans))


def decisions_line(study: Any) -> str:
    """The one-line summary: ``decisions: pruned=<n> enqueued=<n>``."""
    decisions = count_decisions(study)
    return f"decisions: pruned={decisions.pruned} enqueued={decisions.enqueued}"
