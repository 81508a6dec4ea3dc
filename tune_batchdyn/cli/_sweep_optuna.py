"""The Optuna side of ``tune-batchdyn sweep`` (imported only when ``--backend optuna``).

The space's grid points (its ``grid`` fields crossed; ``optuna_form.grid_points``) are
enqueued ``num_samples`` times, ``grid_size * num_samples`` trials as on Ray: repeat by repeat,
in each the fixed-batch beacons (``[search] beacons`` at ``beacon_lr``, marked so that
MeasurePruner lets them run to the end) first. A trial's ``choice`` and range fields are not
enqueued: TPE suggests them, once per trial. Each (point, repeat) is enqueued once per study
(``enqueue.repeat_key``), also when workers join at the same instant (``optuna.enqueue``: a
duplicate is skipped untrained) or restart; one whose trial failed (a killed worker's, failed
once its heartbeat is stale: ``open_study``) is enqueued again, a finished one never. The
pruner stops trials and ``RerouteCallback`` enqueues planned dynamic-sampling trials after
them, and each worker stops when the queue is empty. A repeat whose config a finished trial
already ran (a space without sampled fields) takes that trial's value untrained
(``objective``: ``repeat_of``). A ``--set`` field is held fixed, searched or not (as on Ray).

A study the sweep creates is marked with the space's name and contents and the ``--set``
overrides (study user attributes ``sweep/space``, ``sweep/contents``, ``sweep/set``); joining a
marked study with others is refused, as its finished trials would be reported for settings they
did not run with. After the run, the decision log (each pruned trial and each enqueued plan) is
read back from the study, and a trial still running there (another worker's, or a killed one's)
is named; the records table holds the finished trials. Ctrl-C says how to continue
(``interrupt_said``); workers on one machine share its cores (``share_cores``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pandas as pd

from tune_batchdyn.cli._cores import share_cores
from tune_batchdyn.cli._settings import run_settings, settings_differences
from tune_batchdyn.errors import ConfigError, is_number
from tune_batchdyn.optuna import (
    DUPLICATE_ATTR,
    PLAN_ATTR,
    PLAN_KEY_ATTR,
    UNQUEUED_ATTR,
    MeasurePruner,
    RerouteCallback,
    composable,
    decisions_line,
    enqueue_beacon,
    enqueue_once,
    make_objective,
    open_study,
    planned_keys,
    reason_text,
    repeat_key,
    skipped,
    was_enqueued,
)
from tune_batchdyn.optuna.storage import HEARTBEAT_INTERVAL
from tune_batchdyn.records import REPEAT_ATTR, record_attr_name, records_from_optuna
from tune_batchdyn.space import SearchSettings, Space
from tune_batchdyn.space.optuna_form import grid_points
from tune_batchdyn.train.config import RUN_ONLY_FIELDS

#: Study user attributes: the space's name and the ``--set`` overrides the study was created
#: with (``run_settings``); the space is written last, so a reader that finds it finds all.
SPACE_ATTR = "sweep/space"
SET_ATTR = "sweep/set"
#: The space's contents (``space_contents``), written with the other two.
CONTENTS_ATTR = "sweep/contents"


def pruner_for(name: str, metric: str = "val_error") -> optuna.pruners.BasePruner:
    """The ``--pruner``; ours predicts the space's ``metric`` (refused here, before the study
    is opened, when the records hold no final value of it)."""
    return {
        "measure": lambda: MeasurePruner(metric=metric),
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
        epochs = spent_epochs(trials)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = min((t.value for t in done), default=float("nan"))
        # a duplicate skipped before its config was made: the params it was enqueued with
        config = trial.user_attrs.get("config") or trial.system_attrs.get("fixed_params", {})
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        last = trial.user_attrs.get(record_attr_name(trial.last_step or 0), {})
        state = "diverged" if last.get("diverged") else trial.state.name.lower()
        epochs_run = len(trial.intermediate_values)
        done_how = (f"{state} after {epochs_run} epoch{'' if epochs_run == 1 else 's'}"
                    if epochs_run else f"{state} before training")
        if trial.state == optuna.trial.TrialState.PRUNED and reason_text(trial.user_attrs):
            done_how += f" {reason_text(trial.user_attrs)}"
        if REPEAT_ATTR in trial.user_attrs:
            done_how = f"repeats trial {trial.user_attrs[REPEAT_ATTR]} (not trained again)"
        if DUPLICATE_ATTR in trial.user_attrs:
            done_how = f"duplicate of trial {trial.user_attrs[DUPLICATE_ATTR]} (not trained)"
        if UNQUEUED_ATTR in trial.user_attrs:
            done_how = "drawn after the queue emptied (not trained)"
        # a failed trial's epochs (a killed worker's) count against --budget, not in the summary
        failed = spent_epochs([t for t in trials if t.state == optuna.trial.TrialState.FAIL])
        lost = f" ({failed} in failed trials, run again)" if failed else ""
        print(f"trial {trial.number} {done_how}: {self.metric}={value} "
              f"strategy={config.get('strategy')} batch={config.get('batch_size')} "
              f"lr={config.get('lr')} | {epochs} trial-epochs{lost}, best {best:.4f}",
              flush=True)
        if self.budget is not None and epochs >= self.budget:
            study.stop()


def spent_epochs(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trial-epochs the study's trials have reported, in every run and worker (``--budget``)."""
    return sum(len(t.intermediate_values) for t in trials)


def budget_spent(study: optuna.Study, budget: int | None) -> bool:
    return budget is not None and spent_epochs(study.get_trials(deepcopy=False)) >= budget


class QueueDrained:
    """Study callback: stop once no enqueued trial is waiting (the grid points of every repeat
    and the planned trials have all been taken), so the sampler never adds trials of its own.
    Each worker of a shared study stops on its own the same way."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.stop()


def queued_only(objective: Callable[[optuna.trial.Trial], float]
                ) -> Callable[[optuna.trial.Trial], float]:
    """The sweep's objective: a trial the queue did not hold (another worker took the last
    queued one between this worker's check and its next trial, so the sampler drew it) is
    skipped untrained (``UNQUEUED_ATTR``) and ends this worker's run; the others train on
    their share of the machine's cores (``share_cores``)."""

    def run(trial: optuna.trial.Trial) -> float:
        if not was_enqueued(trial):
            trial.set_user_attr(UNQUEUED_ATTR, True)
            trial.study.stop()
            raise optuna.TrialPruned("the queue was empty: nothing of the grid's to run")
        share_cores(trial)
        return objective(trial)

    return run


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def grid_queue(space: Space) -> list[tuple[dict[str, Any], str, bool]]:
    """Every grid point of the space in each of its ``num_samples`` repeats, as (params, key,
    beacon): the partial params to enqueue, their ``enqueue.repeat_key`` and whether the point
    is a beacon (``is_beacon``); repeat by repeat, the beacons first in each."""
    optuna_space = space.to_optuna()
    points = [(point, is_beacon(optuna_space.config(point), space.search))
              for point in grid_points(optuna_space)]
    points.sort(key=lambda pair: not pair[1])  # stable: grid order otherwise
    return [(point, repeat_key(point, repeat), beacon)
            for repeat in range(space.search.num_samples) for point, beacon in points]


def is_beacon(config: dict[str, Any], search: SearchSettings) -> bool:
    """A fixed-batch config (enqueued fields and constants) at ``beacon_lr`` and one of the
    ``beacons`` sizes, as the Ray searcher's ``is_beacon``; a sampled lr or batch size is
    never a beacon's."""
    lr = config.get("lr")
    return (config.get("strategy", "fixed") == "fixed" and search.beacon_lr is not None
            and is_number(lr) and math.isclose(lr, search.beacon_lr)
            and config.get("batch_size") in search.beacons)


def held_fixed(space: Space, overrides: dict[str, Any]) -> Space:
    """The space with the ``--set`` fields fixed, searched ones too (Ray's param space takes
    them over the searched ones the same way)."""
    return dataclasses.replace(
        space, params={key: p for key, p in space.params.items() if key not in overrides},
        constants={**space.constants, **overrides})


def run_optuna(space: Space, overrides: dict[str, Any],
               args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("tune_batchdyn.optuna").setLevel(logging.INFO)
    name = args.study_name or (space.path.stem if space.path else "sweep")
    study = open_study(args.storage, name if args.storage else None,
                       pruner=pruner_for(args.pruner, space.search.metric),
                       sampler=optuna.samplers.TPESampler(seed=0))
    # each worker may have its own data path or device (RUN_ONLY_FIELDS): not the study's
    check_study_settings(study, run_settings(space, overrides, ignore=RUN_ONLY_FIELDS),
                         args.storage)
    space = held_fixed(space, overrides)
    for params, key, beacon in grid_queue(space):
        if beacon:
            enqueue_beacon(study, params, key=key)
        else:
            enqueue_once(study, params, key=key)
    search = space.search
    # the trial's progress line first, then what the others do after it (a plan enqueued)
    callbacks: list[Any] = [Budget(search.metric, args.budget)]
    if args.pruner == "measure" and args.max_planned > 0:
        candidates = composable(search.dynamic, search.beacons or ())
        if search.dynamic and not candidates:
            print(f"[search] dynamic: none is made of the beacon batch sizes "
                  f"{list(search.beacons or ())} alone; plans use the schedules over the "
                  "finished beacons")
        # a space declaring fewer beacon sizes than the callback's default plans from them all
        fewer = {"min_beacons": len(search.beacons)} if 2 <= len(search.beacons) < 3 else {}
        callbacks.append(RerouteCallback(max_plans=args.max_planned, lr=search.beacon_lr,
                                         candidates=candidates or None, metric=search.metric,
                                         **fewer))
    # the queue is the plan: run it (and what RerouteCallback adds), then stop
    callbacks.append(QueueDrained())
    # the user's code was loaded and probed for every combination (cli._checks): not again
    objective = queued_only(make_objective(space, metric=search.metric, check_code=False))
    if not waiting(study):
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=ended))
        print(f"study {study.study_name!r} already holds {done} finished trials: nothing to run")
    elif budget_spent(study, args.budget):
        print(f"budget of {args.budget} trial-epochs already spent in study "
              f"{study.study_name!r}: no trial started", flush=True)
    else:
        start = time.monotonic()
        with interrupt_said(study, args.storage):
            study.optimize(objective, n_jobs=args.max_concurrent or 1, callbacks=callbacks,
                           timeout=args.time_budget)
        if (args.time_budget is not None and time.monotonic() - start >= args.time_budget
                and waiting(study)):
            print(f"time budget of {args.time_budget:g} s spent: no trial was started after "
                  "it (running ones finished)", flush=True)
        if budget_spent(study, args.budget) and waiting(study):
            print(f"budget of {args.budget} trial-epochs spent: no trial was started after it",
                  flush=True)
    print_decision_log(study)
    for line in held_lines(study, args.storage):
        print(line, flush=True)
    reroute = next((c for c in callbacks if isinstance(c, RerouteCallback)), None)
    if reroute is not None and not planned_keys(study) and reroute.no_plan_reason:
        print(f"no plan enqueued: {reroute.no_plan_reason}")
    # finished trials only: a failed one (a killed worker's) was enqueued again, and a running
    # one (another worker's, or a killed one not yet failed: ``held_lines``) has not ended
    kept = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                    optuna.trial.TrialState.PRUNED))
    return records_from_optuna(kept), decisions_line(study)


class QuietInterrupt:
    """Log filter for Optuna's "Trial N failed ... KeyboardInterrupt" with its traceback and
    the "Trial N failed with value None" after it: the sweep says in one line what happened
    and how to continue (`interrupt_said`)."""

    def __init__(self) -> None:
        self.interrupted = False

    def __call__(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())


@contextlib.contextmanager
def interrupt_said(study: optuna.Study, storage: str | None) -> Iterator[None]:
    """On Ctrl-C: one line saying how to continue (or that the study was in memory) and exit
    status 130, raised as ``SystemExit`` (as the Ray side does), without Optuna's traceback."""
    logger = logging.getLogger("optuna.study._optimize")
    quiet = QuietInterrupt()
    logger.addFilter(quiet)
    try:
        yield
    except KeyboardInterrupt:
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        finished = len(study.get_trials(deepcopy=False, states=ended))
        again = ("rerun the same command to continue (the interrupted trial runs again)"
                 if storage else "the study was in memory; pass --storage "
                 "sqlite:///runs/sweep.db to keep one that a rerun continues")
        print(f"tune-batchdyn sweep: interrupted: {again}; {finished} "
              f"trial{'' if finished == 1 else 's'} finished so far.", file=sys.stderr,
              flush=True)
        raise SystemExit(130) from None
    finally:
        logger.removeFilter(quiet)


def held_lines(study: optuna.Study, storage: str | None) -> list[str]:
    """A line for each trial still running in the study once this worker is done: another
    worker's, or one whose worker was killed, which holds its configuration until failed."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return []
    if storage and "://" in storage:
        grace = 2 * HEARTBEAT_INTERVAL
        how = (f"a killed worker's trial is failed and enqueued again once its heartbeat is "
               f"{grace} s old: rerun the same command then")
    else:
        how = ("a journal has no heartbeat: if its worker is gone, free it with optuna."
               f"load_study(study_name={study.study_name!r}, storage=...).tell(<number>, "
               "state=optuna.trial.TrialState.FAIL) and rerun the same command")
    listed = ", ".join(f"trial {t.number} ({shown_params(t)})" for t in running)
    return [f"still running in the study: {listed}; if no other worker is on it, {how}."]


def stored_settings(study: optuna.Study) -> dict[str, Any] | None:
    """The ``run_settings`` a study was created with, or ``None`` for an unmarked study."""
    attrs = study.user_attrs  # read from storage: another worker may have just written them
    if SPACE_ATTR not in attrs:
        return None
    stored = {"space": attrs[SPACE_ATTR], "set": attrs.get(SET_ATTR) or {}}
    if CONTENTS_ATTR in attrs:
        stored["contents"] = attrs[CONTENTS_ATTR]
    return stored


def check_study_settings(study: optuna.Study, settings: dict[str, Any],
                         storage: str | None) -> None:
    """Mark a new study with ``settings`` and refuse to join a study marked with others: its
    finished trials would be reported as this sweep's ("nothing to run").

    A study with trials but no marks (older, or made by user code) is joined as before. The
    marks are written only by a worker that finds the study empty and unmarked, then read
    back, so of two workers that write at once, the one whose marks were overwritten fails
    unless its settings are the same."""
    fresh = not study.get_trials(deepcopy=False)
    stored = stored_settings(study)
    if stored is None and fresh:
        study.set_user_attr(SET_ATTR, settings["set"])
        study.set_user_attr(CONTENTS_ATTR, settings["contents"])
        study.set_user_attr(SPACE_ATTR, settings["space"])
        stored = stored_settings(study)
    found = "" if stored is None else settings_differences(stored, settings)
    if found:
        raise ConfigError(f"study {study.study_name!r} in {storage} was created by another "
                          f"sweep ({found}); pass another --study-name to start a new study, "
                          "or the same --space (its contents too) and --set to continue this "
                          "one.")


def print_decision_log(study: optuna.Study) -> None:
    """Print ``decision_lines`` under a heading, as the Ray side prints its decision log."""
    lines = decision_lines(study)
    if lines:
        print(f"\ndecision log (read from study {study.study_name!r}):")
        print("\n".join(f"  {line}" for line in lines), flush=True)


def decision_lines(study: optuna.Study) -> list[str]:
    """One line per enqueued plan and per pruned trial, by trial number; the trials
    ``decisions_line`` counts (a plan once, a trial pruned as a duplicate plan not at all)."""
    lines: list[str] = []
    plans: set[str] = set()
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if skipped(trial):
            continue
        key = trial.user_attrs.get(PLAN_KEY_ATTR)
        if key is not None and key not in plans:
            plans.add(key)
            lines.append(plan_line(trial))
        if trial.state == optuna.trial.TrialState.PRUNED:
            when = "before training" if trial.last_step is None else f"at epoch {trial.last_step}"
            lines.append(f"prune trial {trial.number} {when}: "
                         f"{shown_params(trial)}{why_pruned(trial)}")
    return lines


def why_pruned(trial: optuna.trial.FrozenTrial) -> str:
    why = reason_text(trial.user_attrs)
    return f" ({why})" if why else ""


def plan_line(trial: optuna.trial.FrozenTrial) -> str:
    """``enqueue trial 22: strategy=[8,128]-MS batch_size=8 lr=0.1 (predicted error 0.12,
    complete)``."""
    predicted = trial.user_attrs.get("reroute/predicted_error")
    why = "" if predicted is None else f"predicted error {predicted:.4g}, "
    return (f"enqueue trial {trial.number}: {shown_params(trial)} "
            f"({why}{trial.state.name.lower()})")


def shown_params(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's params, with a plan's overrides (its schedule) over them."""
    params = {**trial.params, **trial.user_attrs.get(PLAN_ATTR, {})}
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in params.items())
