"""Enqueue a configuration once per study, across every process sharing one storage.

``enqueue_once(study, params)`` puts a trial in the queue unless the study already holds its
configuration; ``enqueue_beacon``, ``RerouteCallback`` and the sweep's grid all enqueue through
it. Storage offers no compare-and-set, so two workers that check at the same instant can both
insert (Optuna's ``skip_if_exists`` has the same gap). One rule settles every such race:

    Trials with the same key are one configuration. Of those that neither failed nor are marked
    duplicates, the lowest-numbered runs it; any other trial enqueued by ``enqueue_once`` is a
    duplicate, skipped when it starts (``skip_duplicate``, the objective's first step).

The key is the user attribute ``enqueue/key`` (default: the params as sorted JSON; a plan's
is its ``reroute/key``; a sweep's grid point in a later ``num_samples`` repeat adds the repeat:
``repeat_key``), or, for a trial queued by ``study.enqueue_trial`` (a study of an
older version), its fixed params as sorted JSON. A duplicate is pruned before training, with
``enqueue/duplicate_of`` naming the trial that holds its key then; ``decisions`` counts it
nowhere. ``enqueue_once`` skips a key that such a trial holds, so a finished trial (complete
or pruned) is never run again, while a failed one (``TrialState.FAIL``) does not count: its
configuration can be enqueued again. Lower trial numbers are written first, so every worker
that reads the storage reaches the same verdict, and a configuration is never lost: if its
runner fails after a duplicate was skipped, the key is free again.

A worker killed mid-trial leaves it ``RUNNING``; with an RDB storage's heartbeat,
``open_study`` and every ``study.optimize`` fail it after the grace period
(``storage.fail_stale_trials``), and ``requeue_failed`` (the storage's stale-trial callback)
enqueues its configuration again, with the user attributes it was enqueued with (system
attribute ``enqueue/user_attrs``; not its partial records).

Example::

    enqueue_once(study, {"batch_size": 128, "lr": 0.1})   # True: queued
    enqueue_once(study, {"batch_size": 128, "lr": 0.1})   # False: the study holds it
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

log = logging.getLogger("tune_batchdyn.optuna")

#: User attribute: the configuration's identity among enqueued trials.
KEY_ATTR = "enqueue/key"
#: User attribute of a skipped duplicate: the number of the trial that holds its key.
DUPLICATE_ATTR = "enqueue/duplicate_of"
#: User attribute of a trial a grid sweep's worker drew after another worker had taken the last
#: queued trial (the sampler's, not the grid's): skipped untrained as well.
UNQUEUED_ATTR = "enqueue/not_queued"
#: System attribute: the user attributes a trial was enqueued with (copied when requeued).
ENQUEUED_ATTRS = "enqueue/user_attrs"


def params_key(params: Mapping[str, Any]) -> str:
    """The default key: the params as sorted JSON."""
    return json.dumps(dict(params), sort_keys=True)


def repeat_key(params: Mapping[str, Any], repeat: int) -> str:
    """A grid point's key in repeat ``repeat`` (from 0) of a sweep's ``num_samples``: the
    params' key, then `` repeat <n>`` from the second on, so each repeat is enqueued once per
    study and repeat 0 keeps the key a study of an older version holds."""
    key = params_key(params)
    return f"{key} repeat {repeat}" if repeat else key


def trial_key(trial: FrozenTrial) -> str | None:
    """A trial's key (module docstring), or ``None`` for a trial that was not enqueued."""
    key = trial.user_attrs.get(KEY_ATTR)
    if key is None and "fixed_params" in trial.system_attrs:
        key = params_key(trial.system_attrs["fixed_params"])
    return key


def skipped(trial: FrozenTrial) -> bool:
    """Whether the trial was skipped untrained: a duplicate, or drawn from an empty queue."""
    return DUPLICATE_ATTR in trial.user_attrs or UNQUEUED_ATTR in trial.user_attrs


def was_enqueued(trial: optuna.trial.Trial) -> bool:
    """Whether a running trial came from the queue (``enqueue_once``'s key, or the fixed
    params of ``study.enqueue_trial``) rather than from the sampler."""
    if KEY_ATTR in trial.user_attrs:
        return True
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return "fixed_params" in frozen.system_attrs


def holders(trials: list[FrozenTrial], key: str) -> list[int]:
    """Numbers of the trials that hold ``key``: same key, not failed, not a duplicate."""
    return sorted(t.number for t in trials
                  if t.state != TrialState.FAIL and DUPLICATE_ATTR not in t.user_attrs
                  and trial_key(t) == key)


def enqueue_once(study: optuna.Study, params: Mapping[str, Any], *, key: str | None = None,
                 user_attrs: Mapping[str, Any] | None = None) -> bool:
    """Enqueue ``params`` unless a trial holds ``key`` (default ``params_key(params)``);
    ``True`` when a trial was enqueued."""
    key = params_key(params) if key is None else key
    if holders(study.get_trials(deepcopy=False), key):
        return False
    attrs = {**(user_attrs or {}), KEY_ATTR: key}
    study.add_trial(create_trial(state=TrialState.WAITING, user_attrs=attrs,
                                 system_attrs={"fixed_params": dict(params),
                                               ENQUEUED_ATTRS: attrs}))
    return True


def skip_duplicate(trial: optuna.trial.Trial) -> None:
    """Raise ``optuna.TrialPruned`` (after setting ``enqueue/duplicate_of``) when a
    lower-numbered trial holds this trial's key; call it before anything else in an objective
    (``objective`` does)."""
    key = trial.user_attrs.get(KEY_ATTR)
    if key is None:  # not enqueued by enqueue_once: never a duplicate
        return
    earlier = [n for n in holders(trial.study.get_trials(deepcopy=False), key)
               if n < trial.number]
    if earlier:
        trial.set_user_attr(DUPLICATE_ATTR, earlier[0])
        raise optuna.TrialPruned(f"{key} is run by trial {earlier[0]}")


def requeue_failed(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue a failed trial's configuration again (its fixed params, key and the user
    attributes it was enqueued with), unless another trial holds its key."""
    key = trial.user_attrs.get(KEY_ATTR)
    if key is None or "fixed_params" not in trial.system_attrs:
        return
    attrs = dict(trial.system_attrs.get(ENQUEUED_ATTRS) or {KEY_ATTR: key})
    if enqueue_once(study, trial.system_attrs["fixed_params"], key=key, user_attrs=attrs):
        log.info("trial %d failed (its worker stopped); %s enqueued again", trial.number, key)
