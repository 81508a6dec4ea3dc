"""The Optuna side of ``tune-batchdyn sweep`` (imported only when ``--backend optuna``).

A grid space is enqueued whole, its fixed-batch beacons (``[search] beacons`` at
``beacon_lr``, marked so that MeasurePruner lets them run to the end) first, once per study
even when more workers join; the pruner stops trials and
``RerouteCallback`` enqueues planned dynamic-sampling trials after them, and each worker stops
when the queue is empty. A range space is sampled by TPE, ``grid_size * num_samples`` trials
per study.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from typing import Any

import optuna
import pandas as pd

from tune_batchdyn.optuna import (
    MeasurePruner,
    RerouteCallback,
    composable,
    decisions_line,
    enqueue_beacon,
    make_objective,
    open_study,
)
from tune_batchdyn.records import record_attr_name, records_from_optuna
from tune_batchdyn.space import Space


def pruner_for(name: str) -> optuna.pruners.BasePruner:
    return {
        "measure": MeasurePruner,
        "median": optuna.pruners.MedianPruner,
        "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "wilcoxon": optuna.pruners.WilcoxonPruner,
        "none": optuna.pruners.NopPruner,
    }[name]()


class Budget:
    """Study callback: print one line per finished trial (complete, pruned or diverged); stop
    at ``budget`` trial-epochs."""

    def __init__(self, metric: str, budget: int | None) -> None:
        self.metric, self.budget = metric, budget

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        epochs = sum(len(t.intermediate_values) for t in trials)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = min((t.value for t in done), default=float("nan"))
        config = trial.user_attrs.get("config", {})
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        last = trial.user_attrs.get(record_attr_name(trial.last_step or 0), {})
        state = "diverged" if last.get("diverged") else trial.state.name.lower()
        print(f"trial {trial.number} {state} after "
              f"{len(trial.intermediate_values)} epochs: {self.metric}={value} "
              f"strategy={config.get('strategy')} batch={config.get('batch_size')} "
              f"lr={config.get('lr')} | {epochs} trial-epochs, best {best:.4f}", flush=True)
        if self.budget is not None and epochs >= self.budget:
            study.stop()


class QueueDrained:
    """Study callback for grid spaces: stop once no enqueued trial is waiting (the grid and the
    planned trials have all been taken), so the sampler never adds trials of its own. Each
    worker of a shared study stops on its own the same way."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.stop()


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def grid_order(space: Space) -> list[tuple[dict[str, Any], bool]]:
    """Every grid point of the space and whether it is a beacon (fixed batch at the beacon
    lr), the beacons first."""
    from tune_batchdyn.space import grid_search_space

    if not space.params or not all(p.is_categorical for p in space.params.values()):
        return []
    grid = grid_search_space(space)
    keys = list(grid)
    points = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(grid[k] for k in keys))]
    search = space.search

    def is_beacon(point: dict[str, Any]) -> bool:
        return point.get("lr") == search.beacon_lr and point.get("batch_size") in (
            search.beacons or ())

    return sorted(((point, is_beacon(point)) for point in points),
                  key=lambda pair: not pair[1])


def run_optuna(space: Space, overrides: dict[str, Any],
               args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tune_batchdyn.optuna").setLevel(logging.INFO)
    name = args.study_name or (space.path.stem if space.path else "sweep")
    study = open_study(args.storage, name if args.storage else None,
                       pruner=pruner_for(args.pruner),
                       sampler=optuna.samplers.TPESampler(seed=0))
    grid = grid_order(space)
    for params, beacon in grid:
        if beacon:
            enqueue_beacon(study, params)
        else:
            study.enqueue_trial(params, skip_if_exists=True)
    search = space.search
    callbacks: list[Any] = []
    if args.pruner == "measure" and args.max_planned > 0:
        candidates = composable(search.dynamic, search.beacons or ())
        if search.dynamic and not candidates:
            print(f"[search] dynamic: none is made of the beacon batch sizes "
                  f"{list(search.beacons or ())} alone; plans use the schedules over the "
                  "finished beacons")
        callbacks.append(RerouteCallback(max_plans=args.max_planned, lr=search.beacon_lr,
                                         candidates=candidates or None, metric=search.metric))
    callbacks.append(Budget(search.metric, args.budget))
    objective = make_objective(space, metric=search.metric, **overrides)
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=ended))
    if grid:  # the queue is the plan: run it (and what RerouteCallback adds), then stop
        remaining = waiting(study)
        callbacks.append(QueueDrained())
        n_trials = None
    else:  # a range space: the sampler draws the trials
        remaining = space.grid_size * search.num_samples - done
        n_trials = remaining
    if remaining <= 0:
        print(f"study {study.study_name!r} already holds {done} finished trials: nothing to run")
    else:
        study.optimize(objective, n_trials=n_trials, n_jobs=args.max_concurrent or 1,
                       callbacks=callbacks)
    return records_from_optuna(study), decisions_line(study)
