"""``RerouteCallback``: enqueue planned dynamic-sampling trials once enough beacons finished.

After each completed trial, the callback rebuilds the study's records from storage
(``records_from_optuna``), takes the finished fixed-batch trials as beacons
(``predict.beacons``), fits the ``OptimumRegion`` of the finished trials' final ``metric`` in the
(C̄K, LK) plane and asks ``plan_schedule`` for the dynamic schedule whose predicted path ends
nearest the region's centre. A new plan is enqueued once per study (``enqueue.enqueue_once``,
its key the plan's): the fixed params are the plan's ``strategy``, ``batch_size`` and ``lr``,
and the user attributes carry the schedule (``reroute/schedule``: its spec, e.g.
``"s128-to-512"``), the plan (``reroute/plan``: the config overrides), its key (``reroute/key``:
the plan as sorted JSON) and what the planner predicted (``reroute/predicted_error``,
``reroute/distance``, ``reroute/reads``: the beacons read, ``predict.beacons.reads_text``).

A planned trial's params hold ``batch_size`` only with the ``strategy`` it starts (a space
that searches ``strategy`` among choices holding the plan's schedule): alone, ``batch_size: 128``
would read as a fixed-batch trial in ``study.best_params``, ``trials_dataframe()``, the plots
and the sampler's model, whose ``batch_size`` means the batch of every epoch. Its ``lr``, the
base lr as a fixed-batch trial's, stays a param where the space admits it. So a plan that
wins shows as ``best_params == {"lr": 0.1}``, and ``best_trial.user_attrs["reroute/schedule"]``
names its schedule (``user_attrs["config"]`` holds the whole config, as for every trial).

Guards, in order: the finished trial did not complete; the study already holds ``max_plans``
plans; fewer than ``min_beacons`` beacon batch sizes at the planning lr; fewer than ``k``
finished trials in the plane; no region or plan (NaN C̄K or LK, beacons of unequal epochs: the
reason is logged at debug level); the plan's key is already in the study. Every guard reads
storage, never this object, so callbacks in several processes or machines agree, and a
restarted process does not plan again what was planned.

Two workers that decide at the same instant can both enqueue one plan; the rule of
``enqueue`` settles it (the lowest-numbered trial runs the plan, a later one is pruned before
training, with ``enqueue/duplicate_of`` set), and ``decisions`` counts such a pair as one
enqueued plan and no pruned trial. A plan whose trial failed (``TrialState.FAIL``, e.g. its
worker was killed and the heartbeat expired) is enqueued again.

NaN: trials whose final C̄K or LK is NaN take no part in the region (``OptimumRegion``), and
beacons need finite C̄K and LK every epoch; a study without any (the NQM) never reroutes.

Example (digits, two beacon batch sizes, about a minute on a CPU)::

    import optuna
    from tune_batchdyn.optuna import RerouteCallback, decisions_line, make_objective

    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    for batch_size in (256, 512):
        study.enqueue_trial({"batch_size": batch_size})
    objective = make_objective({"batch_size": [256, 512]}, dataset="digits", model="mlp",
                               epochs=5, lr=0.1, measures=("fisher",), device="cpu")
    study.optimize(objective, n_trials=4,
                   callbacks=[RerouteCallback(min_beacons=2, max_plans=1, k=2)])
    print(decisions_line(study))      # decisions: pruned=0 enqueued=1
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from tune_batchdyn.errors import ConfigError, is_int, is_number
from tune_batchdyn.optuna.enqueue import DUPLICATE_ATTR, enqueue_once
from tune_batchdyn.optuna.reporter import FINAL_METRICS
from tune_batchdyn.predict import (
    OptimumRegion,
    SchedulePlan,
    TrialSet,
    beacons_from_records,
    informative_k,
    nearest_lr,
    parse_schedule,
    plan_schedule,
    schedule_family,
)
from tune_batchdyn.predict.schedules import LR_DECAY_FACTOR, LR_MILESTONES
from tune_batchdyn.records import records_from_optuna, target_column
from tune_batchdyn.train.config import TrialConfig

log = logging.getLogger("tune_batchdyn.optuna")

#: User attribute: the plan's config overrides (``strategy``, ``batch_size``, ``lr``).
PLAN_ATTR = "reroute/plan"
#: User attribute: the plan's identity, its overrides as sorted JSON.
PLAN_KEY_ATTR = "reroute/key"
#: The schedule specs ``candidates`` takes.
SCHEDULE_FORMS = "'s{a}-to-{b}', 's{a}-to-{b}-MS', '[16,32,64]', '[16,32,64]-MS'"
#: User attribute: the plan's schedule spec (its ``strategy``), a plain string.
SCHEDULE_ATTR = "reroute/schedule"
#: User attribute of a fixed-batch beacon (``enqueue_beacon``): plans are composed from the
#: beacons' trajectories, so ``MeasurePruner`` lets a beacon run to the end, as
#: ``MeasureScheduler`` does on Ray (a diverged beacon ends on its own).
BEACON_ATTR = "reroute/beacon"


class RerouteCallback:
    """Study callback that enqueues planned dynamic-sampling trials (see the module docstring).

    ``min_beacons``: beacon batch sizes (finished fixed-batch trials at the planning lr) needed
    before planning. ``max_plans``: plans the study may hold in all. ``lr``: the planned trials'
    base lr (default: the best finished trial's). ``candidates``: schedule specs to choose from
    (default every ``s{a}-to-{b}`` and ``-MS`` over the beacon batch sizes); those with more
    stages than the beacons have epochs are left out (a stage lasts at least an epoch).
    ``metric``: the record column whose final value the region ranks, ``val_error`` or
    ``test_error`` (the finals the records table carries). ``lr_milestones``,
    ``lr_decay_factor``: the planned trials' lr decay (as in their ``TrialConfig``). ``k``:
    neighbours averaged by the region (the seed: 5).
    """

    def __init__(self, *, min_beacons: int = 3, max_plans: int = 3, lr: float | None = None,
                 candidates: Sequence[str] | None = None, metric: str = "val_error",
                 lr_milestones: Sequence[float] = LR_MILESTONES,
                 lr_decay_factor: float = LR_DECAY_FACTOR,
                 k: int = 5) -> None:
        if not is_int(min_beacons) or min_beacons < 2:
            raise ConfigError(f"min_beacons must be an integer of at least 2 (a schedule needs "
                              f"two batch sizes), but got {min_beacons=}.")
        if not is_int(max_plans) or max_plans < 1:
            raise ConfigError(f"max_plans must be an integer of at least 1, but got "
                              f"{max_plans=}.")
        if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr must be None or a finite number > 0, but got {lr=}.")
        if candidates is not None:
            _check_candidates(candidates)
        if metric not in FINAL_METRICS:
            raise ConfigError(f"{metric=} is not accepted by RerouteCallback; use one of: "
                              f"{', '.join(map(repr, FINAL_METRICS))} (the records table holds "
                              "no other final value to rank).")
        if not is_int(k) or k < 1:
            raise ConfigError(f"k must be an integer of at least 1, but got {k=}.")
        _check_lr_decay(lr_milestones, lr_decay_factor)
        self._min_beacons = min_beacons
        self._max_plans = max_plans
        self._lr = None if lr is None else float(lr)
        self._candidates = None if candidates is None else tuple(candidates)
        self._target = target_column(metric)
        self._lr_milestones = tuple(lr_milestones)
        self._lr_decay_factor = lr_decay_factor
        self._k = k
        #: Why the latest check made no plan ("" until one did not, and after one made a plan).
        self.no_plan_reason = ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        planned = planned_keys(study)
        if len(planned) >= self._max_plans:
            return
        records = records_from_optuna(study.get_trials(deepcopy=False,
                                                       states=(TrialState.COMPLETE,)))
        plan = self.plan(records)
        if plan is None:
            return
        overrides = {"strategy": plan.schedule, "batch_size": plan.batch_size, "lr": plan.lr}
        key = plan_key(overrides)
        if key in planned:
            return
        enqueued = enqueue_once(study, overrides, key=key, user_attrs={
            SCHEDULE_ATTR: plan.schedule, PLAN_ATTR: overrides, PLAN_KEY_ATTR: key,
            "reroute/predicted_error": _plain(plan.predicted_error),
            "reroute/distance": _plain(plan.distance), "reroute/reads": plan.reads})
        if enqueued:
            log.info("enqueued %s after trial %d (predicted error %.4f)", key, trial.number,
                     plan.predicted_error)

    def plan(self, records: pd.DataFrame) -> SchedulePlan | None:
        """The plan for a records table of finished trials, or ``None`` (reason logged)."""
        try:
            beacons = beacons_from_records(records)
            lr = self._lr if self._lr is not None else _best_lr(records, self._target)
            beacon_lr = nearest_lr(beacons.lrs, lr)
            sizes = sorted(beacons.at_lr(beacon_lr))
            if len(sizes) < self._min_beacons:
                return self._no_plan(f"{len(sizes)} beacon batch sizes at lr {beacon_lr:g}, "
                                     f"need min_beacons={self._min_beacons}")
            candidates = [spec for spec in self._candidates or [
                s.spec for s in schedule_family(sizes) if s.spec != "fixed"]
                if len(parse_schedule(spec).stages) <= beacons.epochs]
            region = OptimumRegion(fraction=1.0, k=self._k, target=self._target).fit(records)
            if len(region.points_) < self._k:
                return self._no_plan(f"{len(region.points_)} finished trials in the (C̄K, LK) "
                                     f"plane, need k={self._k}")
            k = informative_k(self._k, len(region.points_))
            if k != self._k:  # too few trials for a k-nearest map that is not flat
                region = region.set_params(k=k).fit(records)
            plan = plan_schedule(beacons, region, lr=lr, candidates=candidates,
                                 lr_milestones=self._lr_milestones,
                                 lr_decay_factor=self._lr_decay_factor)
            self.no_plan_reason = ""
            return plan
        except ConfigError as err:
            return self._no_plan(str(err))

    def _no_plan(self, reason: str) -> None:
        """Keep why no plan was made (``no_plan_reason``, for the sweep's summary)."""
        self.no_plan_reason = reason
        log.debug("no plan: %s", reason)


def composable(candidates: Iterable[Any], beacon_sizes: Iterable[int]) -> list[str]:
    """The candidate schedule specs whose every stage is a beacon batch size: a plan follows
    the beacons' trajectories, so a stage at another batch size has none to follow (the
    seed's ``s32-to-512`` needs beacons at 32, 64, 128, 256 and 512)."""
    sizes = set(beacon_sizes)
    return [spec for spec in candidates
            if isinstance(spec, str) and set(parse_schedule(spec).stages) <= sizes]


def enqueue_beacon(study: optuna.Study, params: Mapping[str, Any], *,
                   key: str | None = None) -> None:
    """Enqueue a fixed-batch beacon (``params``: its ``batch_size`` and ``lr`` at least),
    marked with ``BEACON_ATTR``; once per study and ``key`` (default: the params'; a sweep's
    later repeat: ``enqueue.repeat_key``), also when another worker or a restart enqueues it
    again (``enqueue.enqueue_once``). A beacon is never pruned, so params without a batch
    size (the sampler would choose it), or with another strategy than "fixed", are refused;
    without an lr the trial takes the space's fixed lr, or the sampler's."""
    _check_beacon(params)
    enqueue_once(study, params, key=key, user_attrs={BEACON_ATTR: True})


def _check_beacon(params: Mapping[str, Any]) -> None:
    if "batch_size" not in params:
        raise ConfigError(f"enqueue_beacon: params={dict(params)!r} hold no batch_size; a "
                          "beacon is a fixed-batch trial at a given batch size, e.g. "
                          "{'batch_size': 128, 'lr': 0.1}.")
    if params.get("strategy", "fixed") != "fixed":
        raise ConfigError(f"enqueue_beacon: strategy={params['strategy']!r} is not accepted; "
                          "a beacon trains at a fixed batch size (strategy 'fixed', or none).")
    try:
        TrialConfig.from_dict({k: params[k] for k in ("batch_size", "lr") if k in params})
    except ConfigError as err:
        raise ConfigError(f"enqueue_beacon: {err}") from err


def plan_key(overrides: Mapping[str, Any]) -> str:
    """A plan's identity: its config overrides as sorted JSON."""
    return json.dumps(dict(overrides), sort_keys=True)


def planned_keys(study: optuna.Study) -> set[str]:
    """Keys of the plans the study holds (waiting, running or finished; failed ones and
    skipped duplicates excluded)."""
    return {t.user_attrs[PLAN_KEY_ATTR] for t in study.get_trials(deepcopy=False)
            if PLAN_KEY_ATTR in t.user_attrs and t.state != TrialState.FAIL
            and DUPLICATE_ATTR not in t.user_attrs}


def plan_overrides(trial: optuna.trial.Trial) -> dict[str, Any]:
    """A rerouted trial's config overrides (``{}`` for other trials)."""
    return dict(trial.user_attrs.get(PLAN_ATTR) or {})


def _check_candidates(candidates: Any) -> None:
    """``candidates``: a non-empty list of schedule spec strings ``parse_schedule`` reads."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence) or not candidates:
        raise ConfigError(f"candidates must be None or a non-empty list of schedule specs "
                          f"(e.g. ['s32-to-512', '[32,128,512]-MS']), but got {candidates=}.")
    for i, spec in enumerate(candidates):
        if not (isinstance(spec, str) and _is_schedule(spec)):
            raise ConfigError(f"candidates[{i}]={spec!r} is not accepted; use schedule specs: "
                              f"{SCHEDULE_FORMS}.")


def _is_schedule(spec: str) -> bool:
    try:
        parse_schedule(spec)
    except ConfigError:
        return False
    return True


def _check_lr_decay(lr_milestones: Any, lr_decay_factor: Any) -> None:
    """The planned trials' lr decay, as ``TrialConfig`` accepts it: increasing fractions of
    the epochs in (0, 1), a factor of at least 1."""
    if (isinstance(lr_milestones, str) or not isinstance(lr_milestones, Sequence)
            or not all(is_number(m) and 0 < m < 1 for m in lr_milestones)
            or list(lr_milestones) != sorted(lr_milestones)):
        raise ConfigError(f"lr_milestones must be a list of increasing fractions of the epochs "
                          f"in (0, 1) (the seed: [0.5, 0.75]), but got {lr_milestones=}.")
    if not is_number(lr_decay_factor) or not 1 <= lr_decay_factor < math.inf:
        raise ConfigError(f"lr_decay_factor must be a number of at least 1 (the lr is divided "
                          f"by it at each milestone; the seed: 10), but got {lr_decay_factor=}.")


def _best_lr(records: pd.DataFrame, target: str) -> float:
    finished = TrialSet.from_records(records, target).finished()
    if not finished:
        raise ConfigError("no finished trial to take the planning lr from; pass lr=...")
    return min(finished, key=lambda t: t.final_error).base_lr


def _plain(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
