"""``plan_schedule``: the staged batch-size schedule predicted to land in the optimum region.

Each candidate schedule's path through the (C̄K, LK) plane is composed from the beacons
(``predict.beacons``); the candidate whose point at the region's budget fraction (its end, for a
region fitted at fraction 1) is nearest the region's centre in the (ln C̄K, ln LK) plane wins.
Candidates within ``tie_tolerance`` (log units) of the nearest are near-ties, and among them the
one with the fewest parameter updates wins (the seed's reason for dynamic sampling: larger
batches train faster).

Learning rates: each batch size's beacon at the planned ``lr``; where it has none there, read
from the lrs around it (``predict.beacons.beacons_at``: interpolated in log scale, or the
nearest with LK scaled); ``SchedulePlan.reads`` says which lrs the chosen schedule read.

A running trial (``start``, its rows so far): every candidate begins with the batch sizes it
ran, and its path continues from the trial's measured position (``continue_from``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.beacons import (
    BeaconSet,
    beacons_at,
    beacons_from_records,
    compose,
    continue_from,
    reads_text,
)
from tune_batchdyn.predict.region import OptimumRegion
from tune_batchdyn.predict.schedules import (
    LR_DECAY_FACTOR,
    LR_MILESTONES,
    Schedule,
    epoch_batch_sizes,
    milestone_epochs,
    parse_schedule,
    schedule_family,
)
from tune_batchdyn.records.io import read_records
from tune_batchdyn.records.schema import RECORD_COLUMNS, empty_record


@dataclass(frozen=True)
class SchedulePlan:
    """The chosen schedule and what the beacons predict for it.

    ``schedule``: a strategy spec (``"s32-to-128"``, ``"s16-to-64-MS"``, ``"[16,32,64]"``,
    ``"fixed"``), run with ``batch_size`` (its first stage) and ``lr``. ``reads``: per batch
    size, the lrs its beacon was read at (``"8@0.05~0.2 32@0.1"``, ``predict.beacons.
    reads_text``; lrs other than ``lr`` mean borrowed estimates). ``batch_sizes``: per epoch.
    ``path``: per-epoch predicted ``epoch, budget_fraction, batch_size, iterations,
    samples_seen, ck_bar, lk``. ``end``: (C̄K, LK) at the last epoch; ``point``: at the region's
    fraction (the end for a region at fraction 1), ``distance`` from the centre there (log
    units). ``predicted_error`` / ``predicted_error_std`` / ``prediction_mode``: from the given
    predictor, else the region's k-nearest average. ``candidates``: every schedule considered
    (spec, first batch size, point, distance, iterations), nearest first.
    """

    schedule: str
    batch_size: int
    lr: float
    reads: str
    batch_sizes: tuple[int, ...]
    path: pd.DataFrame
    end: tuple[float, float]
    point: tuple[float, float]
    distance: float
    iterations: int
    predicted_error: float
    predicted_error_std: float
    prediction_mode: str
    candidates: pd.DataFrame


def plan_schedule(beacons: pd.DataFrame | str | os.PathLike | BeaconSet,
                  region: OptimumRegion | tuple[float, float], *, lr: float | None = None,
                  candidates: Iterable[str | Sequence[int]] | None = None,
                  lr_milestones: Sequence[float] = LR_MILESTONES,
                  lr_decay_factor: float = LR_DECAY_FACTOR, measure_every: int | None = None,
                  tie_tolerance: float = 0.05, predictor: object | None = None,
                  start: pd.DataFrame | None = None) -> SchedulePlan:
    """Choose the schedule whose predicted path ends nearest the region's centre.

    ``beacons``: a records table (or file) whose fixed-batch trials serve as beacons (others are
    ignored), or a ``BeaconSet``. ``region``: a fitted ``OptimumRegion`` or a target point
    (C̄K, LK) at the end of training. ``candidates``: schedule specs or stage lists; default
    every ``s{a}-to-{b}`` and ``-MS`` over the beacons' batch sizes, and each size fixed.
    ``lr_milestones`` / ``lr_decay_factor``: the planned trial's lr decay (for ``-MS`` phases and
    the path's lr). ``predictor``: a fitted ``FinalErrorPredictor`` (fed the predicted path,
    other measures unknown) for ``predicted_error``; default the region's k-nearest average.
    ``start``: a running trial's records so far (one row per epoch), where every candidate
    continues from; candidates that do not begin with its batch sizes are skipped.
    """
    beacon_set = _beacon_set(beacons, measure_every)
    lr = _choose_lr(beacon_set, lr)
    by_size, sources = beacons_at(beacon_set, lr)
    ran = [] if start is None else [int(b) for b in start.sort_values("epoch")["batch_size"]]
    if len(ran) >= beacon_set.epochs:
        raise ConfigError(f"the running trial has {len(ran)} epochs, the beacons "
                          f"{beacon_set.epochs}: plan it against beacons with its own epoch "
                          "count.")
    centre, fraction = _target(region)
    schedules = ([parse_schedule(c) for c in candidates] if candidates is not None
                 else schedule_family(sorted(by_size)))
    if not (isinstance(tie_tolerance, (int, float)) and tie_tolerance >= 0):
        raise ConfigError(f"tie_tolerance={tie_tolerance!r} is not accepted; use a number >= 0.")
    rows, paths, realised = [], {}, set()
    for schedule in schedules:
        sizes = epoch_batch_sizes(schedule, beacon_set.epochs, lr_milestones)
        if (not set(int(b) for b in sizes) <= set(by_size) or _same_run(schedule, sizes, realised)
                or [int(b) for b in sizes[:len(ran)]] != ran):
            continue
        realised.add(tuple(int(b) for b in sizes))
        path = compose(by_size, sizes, beacon_set.measure_every)
        if start is not None:
            path = continue_from(path, start.sort_values("epoch"), beacon_set.measure_every)
        point = _point_at(path, fraction)
        key = (schedule.spec, int(sizes[0]))
        paths[key] = (schedule, sizes, path, point)
        rows.append({"schedule": key[0], "batch_size": key[1],
                     "ck_bar": math.exp(point[0]), "lk": math.exp(point[1]),
                     "distance": float(np.hypot(point[0] - centre[0], point[1] - centre[1])),
                     "iterations": int(round(path["iterations"][-1]))})
    if not rows:
        begins = f" and begins with the trial's {ran}" if ran else ""
        raise ConfigError(f"no candidate schedule uses only beacon batch sizes {sorted(by_size)}"
                          f"{begins}; add beacons or pass candidates over those sizes.")
    table = pd.DataFrame(rows).sort_values(["distance", "iterations"], ignore_index=True)
    near = table[table["distance"] <= table["distance"].min() + tie_tolerance]
    chosen = near.sort_values(["iterations", "distance"]).iloc[0]
    schedule, sizes, path, point = paths[(chosen["schedule"], int(chosen["batch_size"]))]
    frame = _path_frame(path, sizes, lr, beacon_set.epochs, lr_milestones, lr_decay_factor)
    mean, std, mode = _predicted_error(frame, point, region, predictor, lr)
    return SchedulePlan(
        schedule=schedule.spec, batch_size=int(sizes[0]), lr=lr,
        reads=reads_text(sources, sizes),
        batch_sizes=tuple(int(b) for b in sizes), path=frame,
        end=(float(path["ck_bar"][-1]), float(path["lk"][-1])),
        point=(math.exp(point[0]), math.exp(point[1])), distance=float(chosen["distance"]),
        iterations=int(chosen["iterations"]), predicted_error=mean, predicted_error_std=std,
        prediction_mode=mode, candidates=table)


def _same_run(schedule: Schedule, sizes: np.ndarray, realised: set[tuple[int, ...]]) -> bool:
    """A candidate that trains as one already listed (the same batch size each epoch), or a
    dynamic spec that trains at one batch size throughout (over a few epochs ``-MS`` phases
    can be shorter than their stages): that run is a beacon's, not a plan."""
    runs = tuple(int(b) for b in sizes)
    return runs in realised or (schedule.spec != "fixed" and len(set(runs)) == 1)


def _beacon_set(beacons: pd.DataFrame | str | os.PathLike | BeaconSet,
                measure_every: int | None) -> BeaconSet:
    if isinstance(beacons, BeaconSet):
        return beacons
    if isinstance(beacons, (str, os.PathLike)):
        beacons = read_records(beacons)
    if measure_every is not None and not (isinstance(measure_every, int) and measure_every > 0):
        raise ConfigError(f"measure_every={measure_every!r} is not accepted; use a positive "
                          "integer.")
    return beacons_from_records(beacons, measure_every)


def _choose_lr(beacon_set: BeaconSet, lr: float | None) -> float:
    lrs = beacon_set.lrs
    if lr is None:
        if len(lrs) > 1:
            raise ConfigError(f"beacons have learning rates {lrs}; pass lr=<the planned trial's "
                              "base lr>.")
        return lrs[0]
    if not (isinstance(lr, (int, float)) and 0 < lr < math.inf):
        raise ConfigError(f"lr={lr!r} is not accepted; use a positive number.")
    return float(lr)


def _target(region: OptimumRegion | tuple[float, float]) -> tuple[tuple[float, float], float]:
    if isinstance(region, OptimumRegion):
        if not hasattr(region, "centre_log_"):
            raise ConfigError("region is not fitted; call OptimumRegion(...).fit(records) first.")
        return region.centre_log_, float(region.fraction)
    try:
        ck, lk = (float(v) for v in region)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"region={region!r} is not accepted; use a fitted OptimumRegion or a "
                          "(ck_bar, lk) point.") from err
    if not (ck > 0 and lk > 0):
        raise ConfigError(f"region={region!r} is not accepted; C̄K and LK must be positive.")
    return (math.log(ck), math.log(lk)), 1.0


def _point_at(path: dict[str, np.ndarray], fraction: float) -> tuple[float, float]:
    epochs = len(path["lk"]) - 1
    fractions = np.arange(1, epochs + 1) / epochs
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = [np.log(path[name][1:]) for name in ("ck_bar", "lk")]
    points = []
    for values in logs:
        keep = np.isfinite(values)
        points.append(float(np.interp(fraction, fractions[keep], values[keep]))
                      if keep.any() else math.nan)
    return points[0], points[1]


def _path_frame(path: dict[str, np.ndarray], sizes: np.ndarray, lr: float, epochs: int,
                lr_milestones: Sequence[float], lr_decay_factor: float) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    decays = np.array([sum(e - 1 >= m for m in milestone_epochs(epochs, tuple(lr_milestones)))
                       for e in epoch])
    return pd.DataFrame({
        "epoch": epoch, "budget_fraction": epoch / epochs, "batch_size": sizes.astype(int),
        "lr": lr / lr_decay_factor ** decays,
        "iterations": np.round(path["iterations"][1:]).astype(int),
        "samples_seen": np.round(path["samples"][1:]).astype(int),
        "ck_bar": path["ck_bar"][1:], "lk": path["lk"][1:],
    })


def _predicted_error(frame: pd.DataFrame, point: tuple[float, float],
                     region: OptimumRegion | tuple[float, float], predictor: object | None,
                     lr: float) -> tuple[float, float, str]:
    if predictor is not None:
        trajectory = pd.DataFrame([empty_record() for _ in range(len(frame))])
        for name in frame.columns:
            trajectory[name] = frame[name].to_numpy()
        trajectory = trajectory.assign(trial_id="plan", **{"config/lr": lr})
        trajectory = trajectory.loc[:, [*RECORD_COLUMNS, "trial_id", "config/lr",
                                        "budget_fraction"]]
        guess = predictor.predict(trajectory)
        return float(guess.mean), float(guess.std), guess.mode
    if isinstance(region, OptimumRegion):
        mean, std = region.error_at((math.exp(point[0]), math.exp(point[1])))
        return float(mean[0]), float(std[0]), f"knn{region.k}"
    return math.nan, math.nan, "none"

