"""What the plugin decided in a study, counted from storage: pruned trials and enqueued plans.

``decisions_line(study)`` is the summary that the CLI and the examples print once, at the end
of ``study.optimize``: ``decisions: pruned=<n> enqueued=<n>``. ``pruned`` counts trials in
``TrialState.PRUNED``, except trials skipped untrained (``enqueue.skipped``: duplicates of an
enqueued configuration that another trial holds, and a grid sweep's trials drawn from an empty
queue); ``enqueued``
counts distinct plans (``reroute/key``), so a plan two workers enqueued at the same instant
counts once. Plans still waiting in the queue when ``optimize`` returned (``n_trials`` or a
timeout reached first, or a ``GridSampler`` that stopped the study once its grid was done) are
named: ``enqueued=2 (1 waiting: run study.optimize again to train it)``.
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
    waiting: int = 0  #: enqueued plans no worker has started yet


def count_decisions(study: Any) -> Decisions:
    """Count the study's decisions (anything with ``get_trials()``: a study, any storage)."""
    trials = study.get_trials(deepcopy=False)
    pruned = sum(1 for t in trials
                 if t.state == TrialState.PRUNED and not skipped(t))
    plans = {t.user_attrs[PLAN_KEY_ATTR] for t in trials if PLAN_KEY_ATTR in t.user_attrs}
    started = {t.user_attrs[PLAN_KEY_ATTR] for t in trials
               if PLAN_KEY_ATTR in t.user_attrs and t.state != TrialState.WAITING}
    return Decisions(pruned=pruned, enqueued=len(plans), waiting=len(plans - started))


def decisions_line(study: Any) -> str:
    """The one-line summary: ``decisions: pruned=<n> enqueued=<n>``, and the plans still
    waiting, if any."""
    decisions = count_decisions(study)
    line = f"decisions: pruned={decisions.pruned} enqueued={decisions.enqueued}"
    if decisions.waiting:
        line += (f" ({decisions.waiting} waiting: run study.optimize again to train "
                 f"{'it' if decisions.waiting == 1 else 'them'})")
    return line
