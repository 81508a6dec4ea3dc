"""``Planner``: the optimum region, new dynamic-sampling trials and reroutes, from finished trials.

A thin layer over ``tune_batchdyn.predict`` that the searcher (spawning) and the scheduler
(rerouting) share:

- ``region``: ``OptimumRegion`` of the finished trials' final metric in the (C̄K, LK) plane, read
  at ``region_fraction``. ``region_tolerance`` widens the seed's exact minimum level set by that
  much error (0.01: one point), so "in the region" means "among the best within a point";
  the error map averages ``region_k`` nearest trials, at most half of those finished.
- ``spawn_plans``: ``plan_schedule`` at each beacon learning rate (or ``lrs``), over the family
  of staged schedules on the beacons' batch sizes (or ``candidates``); fixed schedules are
  dropped (they are beacons already), the rest ordered by predicted error, then distance.
- ``reroute``: for a running trial that has trained k of its E epochs at batch sizes
  b_1..b_k, every candidate is that prefix followed by epochs k+1..E of a family schedule (what
  the engine runs when the trial resumes under the new spec), written as a per-epoch stage list
  (``[b_1,...,b_E]``, one stage per epoch). The trial's current course is one of them; the
  option says where each ends in the plane. Each course continues from the trial's measured
  position at epoch k with the beacons' increments at its lr (borrowed from the lrs around it
  where its own lr has no beacon at a batch size: ``predict.beacons.beacons_at``).

Beacons are the finished fixed-batch trials with the planned trial's epoch count. The planned
trial's lr recipe (``lr_milestones``, ``lr_decay_factor``) and ``measure_every`` are read from
the trials' configs when present there, else ``TrialConfig``'s defaults: settings given only to
``make_trainable`` are invisible to Ray results, so put such settings in the param space.
Everything here raises ``ConfigError`` with the reason when the records cannot support a plan
(no finite C̄K, as for NQM trials; no beacon at a batch size; too few finished trials).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError, is_number
from tune_batchdyn.predict import (
    OptimumRegion,
    Schedule,
    SchedulePlan,
    beacons_at,
    beacons_from_records,
    epoch_batch_sizes,
    informative_k,
    nearest_lr,
    parse_schedule,
    plan_schedule,
    reads_text,
    schedule_family,
)
from tune_batchdyn.predict.schedules import LR_DECAY_FACTOR, LR_MILESTONES
from tune_batchdyn.records import CONFIG_PREFIX, target_column


@dataclass(frozen=True)
class RerouteOption:
    """Where a running trial ends on its current course, and on the best planned course."""

    schedule: str
    batch_size: int
    current_point: tuple[float, float]
    current_distance: float
    current_in_region: bool
    planned_point: tuple[float, float]
    planned_distance: float
    planned_in_region: bool
    predicted_error: float
    #: the beacons each course reads after the trial's current epoch ("8@0.05~0.2 32@0.1":
    #: batch 8 interpolated between lrs 0.05 and 0.2, 32 read at 0.1); lrs other than the
    #: trial's own mean estimates borrowed from them
    current_reads: str = ""
    planned_reads: str = ""

    @property
    def worthwhile(self) -> bool:
        """Off course now, on course after the switch."""
        return not self.current_in_region and self.planned_in_region

    def numbers(self) -> dict[str, float | str]:
        """What the decision row records: both end points, the error, the beacons read."""
        return {"current_ck": self.current_point[0], "current_lk": self.current_point[1],
                "current_distance": self.current_distance,
                "planned_ck": self.planned_point[0], "planned_lk": self.planned_point[1],
                "planned_distance": self.planned_distance,
                "planned_error": self.predicted_error, "current_reads": self.current_reads,
                "planned_reads": self.planned_reads}


class Planner:
    """Region fitting and schedule planning on records tables (see the module docstring)."""

    def __init__(self, *, region_fraction: float = 1.0, region_k: int = 5,
                 region_tolerance: float = 0.01,
                 candidates: Iterable[str | Sequence[int]] | None = None,
                 lrs: Iterable[float] | None = None, tie_tolerance: float = 0.05) -> None:
        candidates = None if candidates is None else list(candidates)
        lrs = None if lrs is None else list(lrs)
        _check_planner_settings(region_fraction, region_k, region_tolerance, candidates, lrs,
                                tie_tolerance)
        self.region_fraction = region_fraction
        self.region_k = region_k
        self.region_tolerance = region_tolerance
        self.candidates = candidates
        self.lrs = None if lrs is None else [float(lr) for lr in lrs]
        self.tie_tolerance = tie_tolerance

    def region(self, finished: pd.DataFrame, metric: str) -> OptimumRegion:
        """The optimum region of the finished trials' final ``metric``.

        The error map averages the ``region_k`` nearest trials, but at most half of those
        finished (``informative_k``): otherwise, early on, any course into the trials' midst
        would count as "in the region"."""
        k = informative_k(self.region_k, finished["trial_id"].nunique())
        return OptimumRegion(fraction=self.region_fraction, k=k,
                             tolerance=self.region_tolerance,
                             target=target_column(metric)).fit(finished)

    def spawn_plans(self, finished: pd.DataFrame, region: OptimumRegion) -> list[SchedulePlan]:
        """Dynamic schedules toward the region, best first (predicted error, then distance).

        Fixed schedules are no candidates (the beacons are those already), so each lr gives
        the dynamic schedule that ends nearest the region, even when a beacon ends nearer."""
        table = beacon_table(finished)
        beacons = beacons_from_records(table)
        milestones, decay = lr_recipe(table)
        plans = []
        for lr in self.lrs or beacons.lrs:
            nearest = nearest_lr(beacons.lrs, lr)
            family = ([parse_schedule(c) for c in self.candidates] if self.candidates is not None
                      else schedule_family(sorted(beacons.at_lr(nearest))))
            dynamic = [s.spec for s in family if s.spec != "fixed"]
            if dynamic:
                plans.append(plan_schedule(beacons, region, lr=lr, candidates=dynamic,
                                           lr_milestones=milestones, lr_decay_factor=decay,
                                           tie_tolerance=self.tie_tolerance))
        return sorted(plans, key=lambda p: (_nan_last(p.predicted_error), p.distance))

    def reroute(self, finished: pd.DataFrame, region: OptimumRegion, rows: pd.DataFrame,
                config: Mapping[str, Any]) -> RerouteOption:
        """The best course from a running trial's position (its rows so far, its config)."""
        table = beacon_table(finished)
        beacons = beacons_from_records(table)
        milestones, decay = lr_recipe(table)
        epochs = trial_epochs(rows)
        lr = _base_lr(rows, config)
        done = [int(b) for b in rows.sort_values("epoch")["batch_size"]]
        current = done + current_course(config, epochs, milestones)[len(done):]
        sources = beacons_at(beacons, lr)[1]
        sizes = sorted(sources)
        family = ([parse_schedule(c) for c in self.candidates] if self.candidates is not None
                  else schedule_family(sizes))
        courses = {tuple(current)}
        courses |= {tuple(done) + tuple(int(b) for b in epoch_batch_sizes(s, epochs, milestones)
                                         [len(done):]) for s in family}
        missing = sorted(set(current) - set(sizes))
        if missing:
            raise ConfigError(f"no beacon holds the batch sizes {missing} of the trial's course "
                              f"(beacons: {sorted(beacons.beacons)}); it cannot be placed.")
        plan = plan_schedule(beacons, region, lr=lr,
                             candidates=[list(c) for c in sorted(courses)],
                             lr_milestones=milestones, lr_decay_factor=decay,
                             tie_tolerance=self.tie_tolerance, start=rows)
        now = _candidate_row(plan.candidates, current)
        current_point = (float(now["ck_bar"]), float(now["lk"]))
        return RerouteOption(
            schedule=plan.schedule, batch_size=plan.batch_size, current_point=current_point,
            current_distance=float(now["distance"]),
            current_in_region=region.contains(current_point),
            planned_point=plan.point, planned_distance=plan.distance,
            planned_in_region=region.contains(plan.point),
            predicted_error=plan.predicted_error,
            current_reads=reads_text(sources, current[len(done):]),
            planned_reads=reads_text(sources, plan.batch_sizes[len(done):]))


def _check_planner_settings(region_fraction: Any, region_k: Any, region_tolerance: Any,
                            candidates: list | None, lrs: list | None,
                            tie_tolerance: Any) -> None:
    """Raise ConfigError naming the Planner setting out of range: at construction, since a bad
    setting met mid-sweep would only switch planning off."""
    try:
        OptimumRegion(fraction=region_fraction, k=region_k,
                      tolerance=region_tolerance)._check_params()
    except ConfigError as err:  # "fraction=... is not accepted; ..." -> "region_fraction=..."
        raise ConfigError(f"Planner: region_{err}") from err
    if candidates is not None:
        if not candidates:
            raise ConfigError("Planner: candidates=[] is not accepted; give schedules such as "
                              "'s32-to-512', or None for the beacons' family.")
        for candidate in candidates:
            try:
                parse_schedule(candidate)
            except ConfigError as err:
                raise ConfigError(f"Planner: candidates: {err}") from err
    if lrs is not None:
        if not lrs or not all(is_number(lr) and 0 < lr < math.inf for lr in lrs):
            raise ConfigError(f"Planner: lrs={lrs!r} is not accepted; use positive numbers, "
                              "or None for the beacons' learning rates.")
    if not (is_number(tie_tolerance) and tie_tolerance >= 0):
        raise ConfigError(f"Planner: tie_tolerance={tie_tolerance!r} is not accepted; use a "
                          "number >= 0 (log units).")



def beacon_table(finished: pd.DataFrame) -> pd.DataFrame:
    """The finished trials with the most common epoch count among fixed-batch ones (beacons
    must share the planned trial's epochs)."""
    name = f"{CONFIG_PREFIX}epochs"
    if name not in finished.columns or not len(finished):
        raise ConfigError("no finished trial with a known epoch count to plan from yet.")
    per_trial = finished.groupby("trial_id")[name].first()
    return finished[finished[name] == per_trial.mode().iloc[0]]


def lr_recipe(table: pd.DataFrame) -> tuple[tuple[float, ...], float]:
    """``lr_milestones`` and ``lr_decay_factor`` of the trials (their configs, else defaults)."""
    milestones: tuple[float, ...] = LR_MILESTONES
    name = f"{CONFIG_PREFIX}lr_milestones"
    if name in table.columns and table[name].notna().any():
        value = table[name].dropna().iloc[0]
        milestones = tuple(float(m) for m in (json.loads(value) if isinstance(value, str)
                                              else value))
    decay = LR_DECAY_FACTOR
    name = f"{CONFIG_PREFIX}lr_decay_factor"
    if name in table.columns and table[name].notna().any():
        decay = float(table[name].dropna().iloc[0])
    return milestones, decay


def trial_epochs(rows: pd.DataFrame) -> int:
    """A trial's planned epochs from its rows (epoch / budget fraction)."""
    last = rows.sort_values("epoch").iloc[-1]
    return int(round(float(last["epoch"]) / float(last["budget_fraction"])))


def current_course(config: Mapping[str, Any], epochs: int,
                   milestones: Sequence[float]) -> list[int]:
    """The batch size of each epoch under the trial's strategy, if it is a staged schedule."""
    strategy = config.get("strategy", "fixed")
    batch_size = int(config.get("batch_size", 0) or 0)
    if strategy == "fixed":
        if batch_size < 1:
            raise ConfigError("the trial's config has no batch_size; cannot plan its course.")
        return [batch_size] * epochs
    if not isinstance(strategy, str):
        raise ConfigError(f"strategy={strategy!r} is not a staged schedule; only fixed and "
                          "staged schedules (s{a}-to-{b}, lists) can be rerouted.")
    return [int(b) for b in epoch_batch_sizes(parse_schedule(strategy), epochs, milestones)]


def _candidate_row(candidates: pd.DataFrame, course: Sequence[int]) -> pd.Series:
    spec = Schedule(tuple(int(b) for b in course)).spec
    match = candidates[(candidates["schedule"] == spec)
                       & (candidates["batch_size"] == int(course[0]))]
    if match.empty:
        raise ConfigError(f"the trial's course {list(course)} has no beacon for every batch size "
                          "it uses; it cannot be placed in the plane.")
    return match.iloc[0]


def _base_lr(rows: pd.DataFrame, config: Mapping[str, Any]) -> float:
    lr = config.get("lr")
    if isinstance(lr, (int, float)) and lr > 0:
        return float(lr)
    return float(rows.sort_values("epoch")["lr"].iloc[0])


def _nan_last(value: float) -> float:
    return value if np.isfinite(value) else math.inf
