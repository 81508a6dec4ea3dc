"""Beacons: fixed-batch trials whose per-epoch measures predict where a staged schedule goes.

A beacon is the mean, over seeds, of the finished, non-diverged trials that kept one batch size
B throughout at one base lr (equal to 7 significant digits: float32 round trips) and learned,
given per epoch e = 0..E
(index 0: before training, all zero): cumulative iterations I(e), samples, C̄K(e), LK(e),
and from them the number of Fisher measurements M(e) = ceil(I(e) / m) (taken at iterations
1, 1 + m, 1 + 2m, ..., m = ``measure_every``) and the running sum of c_k, S(e) = C̄K(e) · M(e).

Composition (the seed, §4.3: a schedule's curve travels between its beacons). Epoch e of a plan
runs at batch b(e) with the beacon of b(e) over the same epochs (same lr phase), so:

- iterations and samples add the beacon's per-epoch increments;
- LK, a sum of l_k, adds the beacon's per-epoch increments ΔL_b(e);
- C̄K, a running mean of c_k, mixes stages by their numbers of measurements: inside a stage
  (a run of epochs at one batch size) that started after epoch e0, the plan's sum of c_k grows by
  c̄ · (M_plan(e) - M_plan(e0)), where c̄ = (S_b(e) - S_b(e0)) / (M_b(e) - M_b(e0)) is the
  beacon's mean c_k over the same epochs (its running mean C̄K_b(e) when it took no measurement
  there), and M_plan counts the plan's own measurements from its cumulative iterations. A one-
  stage plan reproduces its beacon exactly.

Failed configurations: a fixed-batch trial that diverged, or ran its budget without learning,
marks its (lr, B) as failed, and a configuration with a failed seed is no beacon. Learning
means a last training loss below the first epoch's and a last training error not above the
first epoch's by more than three standard errors (√(e(1−e)/n), n the first epoch's samples),
nor, when the first epoch got most samples wrong, short of three below it: digits at batch 8
and lr 0.1 collapses to chance after a first epoch of loss 3.5 and error 0.45, and on the
synthetic task some runs sit at chance (loss ln 10, error 0.90) from the first epoch.

Other learning rates (``beacons_at``): a plan at an lr where a batch size has no beacon reads
that size's beacons at the nearest lrs below and above, interpolated per epoch in log scale
(ln C̄K and ln LK linear in ln lr); beyond the lrs it has, the nearest one's, with LK scaled by
the lr ratio (l_k is proportional to the lr) and C̄K as it is. A size is never read across a
failed configuration of it (nor at one): a plan does not step into a batch size at an lr
where it, or a step toward it, collapsed or diverged. ``benchmarks/borrowed_beacons.py``
measures how far the reads land from the real end points.

A running trial (``continue_from``): its epochs so far are measured, so a course from there
adds the composed increments of the later epochs to its own position, not to a composed one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import CONFIG_PREFIX
from tune_batchdyn.records.table import validate_table

#: Fisher measurement interval when the records do not say (the seed's 50 mini-batches).
DEFAULT_MEASURE_EVERY = 50


@dataclass(frozen=True)
class Beacon:
    """One (lr, batch size)'s mean trajectory, arrays of length epochs + 1 (index 0: start)."""

    lr: float
    batch_size: int
    iterations: np.ndarray
    samples: np.ndarray
    ck_bar: np.ndarray
    lk: np.ndarray
    n_trials: int

    def measurements(self, measure_every: int) -> np.ndarray:
        return np.ceil(self.iterations / measure_every)

    def c_sum(self, measure_every: int) -> np.ndarray:
        return self.ck_bar * self.measurements(measure_every)


@dataclass(frozen=True)
class BeaconSet:
    """The beacons of one records table: by (lr, batch size), with their epochs and m."""

    beacons: dict[tuple[float, int], Beacon]
    epochs: int
    measure_every: int
    #: (lr, batch size) of the fixed-batch configurations that diverged or did not learn
    failed: frozenset[tuple[float, int]] = frozenset()

    @property
    def lrs(self) -> list[float]:
        """The beacons' learning rates, ascending."""
        return sorted({lr for lr, _ in self.beacons})

    def at_lr(self, lr: float) -> dict[int, Beacon]:
        """The beacons at learning rate ``lr``, by batch size."""
        return {b: beacon for (rate, b), beacon in self.beacons.items() if rate == lr}


def beacons_at(beacon_set: BeaconSet, lr: float) -> tuple[dict[int, Beacon],
                                                          dict[int, tuple[float, ...]]]:
    """Every batch size's beacon for a plan at ``lr`` (see the module docstring), and the lrs
    each was read from: ``(lr,)`` where it has its own, two when interpolated, one when borrowed
    from the nearest. A size with no beacon it may read is left out."""
    beacons, sources = {}, {}
    for size in sorted({b for _, b in beacon_set.beacons}):
        failed = [rate for rate, b in beacon_set.failed if b == size]
        rates = [rate for rate, b in sorted(beacon_set.beacons) if b == size
                 and not any(min(rate, lr) <= f <= max(rate, lr) for f in failed)]
        own = [rate for rate in rates if same_lr(rate, lr)]
        below = [rate for rate in rates if rate < lr]
        above = [rate for rate in rates if rate > lr]
        if own:
            sources[size] = (own[0],)
        elif below and above:
            sources[size] = (below[-1], above[0])
        elif rates:
            sources[size] = (nearest_lr(rates, lr),)
        else:
            continue
        beacons[size] = _beacon_at([beacon_set.beacons[(rate, size)] for rate in sources[size]],
                                   lr)
    return beacons, sources


def reads_text(sources: Mapping[int, tuple[float, ...]], sizes: Iterable[int]) -> str:
    """Which beacons a course reads, for a decision row: ``"8@0.05~0.2 32@0.1"``: batch 8
    interpolated between lrs 0.05 and 0.2, batch 32 read at lr 0.1 (the trial's own, or the
    nearest past the edge when the plan's lr is another)."""
    return " ".join(f"{size}@{'~'.join(f'{rate:g}' for rate in sources[size])}"
                    for size in sorted({int(b) for b in sizes}))


def same_lr(a: float, b: float) -> bool:
    """One learning rate (to 7 significant digits, as beacons are grouped)."""
    return math.isclose(a, b, rel_tol=1e-6)


def _beacon_at(read: list[Beacon], lr: float) -> Beacon:
    """One beacon as it would be at ``lr``: its own, interpolated between two (log scale), or
    the nearest with LK scaled by the lr ratio."""
    first = read[0]
    if len(read) == 1:
        return Beacon(lr, first.batch_size, first.iterations, first.samples, first.ck_bar,
                      first.lk * (lr / first.lr), first.n_trials)
    low, high = read
    weight = math.log(lr / low.lr) / math.log(high.lr / low.lr)

    def between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            logs = (1 - weight) * np.log(a) + weight * np.log(b)
        return np.where((a > 0) & (b > 0), np.exp(logs), 0.0)  # index 0: both zero

    return Beacon(lr, first.batch_size, low.iterations, low.samples,
                  between(low.ck_bar, high.ck_bar), between(low.lk, high.lk),
                  low.n_trials + high.n_trials)


def continue_from(path: dict[str, np.ndarray], rows: pd.DataFrame,
                  measure_every: int) -> dict[str, np.ndarray]:
    """``path`` (from ``compose``) continued from a running trial's measured position: epochs
    1..k are its ``rows`` (``iterations, samples_seen, ck_bar, lk``, one per epoch); each later
    epoch adds the path's increment to them (C̄K through the running sum of c_k)."""
    missing = [name for name in ("epoch", *RUNNING_COLUMNS) if name not in rows.columns]
    if missing or not len(rows):
        raise ConfigError(f"the running trial's rows need the columns epoch, "
                          f"{', '.join(RUNNING_COLUMNS)} and one row per epoch; "
                          f"{'missing ' + ', '.join(missing) if missing else 'no rows'}.")
    rows = rows.sort_values("epoch")
    k = len(rows)
    if not np.array_equal(rows["epoch"].to_numpy(), np.arange(1, k + 1)):
        raise ConfigError(f"the running trial's epochs {rows['epoch'].tolist()} are not 1..{k}, "
                          "one row each.")
    if k >= len(path["lk"]):
        raise ConfigError(f"the running trial has {k} epochs, the course {len(path['lk']) - 1}: "
                          "plan it against beacons with its own epoch count.")
    measured = {name: rows[column].to_numpy(dtype=float) for name, column in
                (("iterations", "iterations"), ("samples", "samples_seen"),
                 ("ck_bar", "ck_bar"), ("lk", "lk"))}
    if not all(np.isfinite(values).all() for values in measured.values()):
        raise ConfigError(f"the trial's measures over its {k} epochs are not all finite; its "
                          "position in the plane is unknown.")
    measured["measurements"] = np.ceil(measured["iterations"] / measure_every)
    with np.errstate(invalid="ignore"):
        c_sum = np.nan_to_num(path["ck_bar"] * path["measurements"])
    out = {}
    for name in ("iterations", "samples", "measurements", "lk"):
        later = measured[name][-1] + path[name][k + 1:] - path[name][k]
        out[name] = np.r_[0.0, measured[name], later]
    later_c = measured["ck_bar"][-1] * measured["measurements"][-1] + c_sum[k + 1:] - c_sum[k]
    out["ck_bar"] = np.r_[math.nan, measured["ck_bar"], later_c / out["measurements"][k + 1:]]
    return out


#: What ``continue_from`` reads of a running trial, one row per epoch.
RUNNING_COLUMNS: tuple[str, ...] = ("iterations", "samples_seen", "ck_bar", "lk")


def nearest_lr(rates: Iterable[float], lr: float) -> float:
    """The rate of ``rates`` nearest ``lr`` in log scale: the beacons a plan at ``lr``
    composes from (their LK scaled by the lr ratio)."""
    return min(rates, key=lambda rate: abs(math.log(rate / lr)))


def beacons_from_records(records: pd.DataFrame, measure_every: int | None = None) -> BeaconSet:
    """Beacons from the fixed-batch trials of ``records`` (other trials are ignored)."""
    validate_table(records)
    table = records.sort_values(["trial_id", "epoch"])
    grouped: dict[tuple[float, int], list[pd.DataFrame]] = {}
    failed: set[tuple[float, int]] = set()
    for _, rows in table.groupby("trial_id", sort=False):
        if rows["batch_size"].nunique() != 1:
            continue
        key = (_base_lr(rows), int(rows["batch_size"].iloc[0]))
        if _failed(rows):
            failed.add(key)
        elif _usable(rows):
            grouped.setdefault(key, []).append(rows)
    grouped = {key: group for key, group in grouped.items() if key not in failed}
    if not grouped:
        raise ConfigError("records hold no beacon: a finished, non-diverged trial with one batch "
                          "size throughout, finite ck_bar and lk every epoch, that learned (its "
                          "last train_loss and train_error below its first epoch's) at a "
                          "configuration where no seed failed.")
    epochs = {len(rows) for group in grouped.values() for rows in group}
    if len(epochs) != 1:
        raise ConfigError(f"beacons have different epoch counts {sorted(epochs)}; pass beacons "
                          "trained for the same number of epochs as the planned trial.")
    measure_every = measure_every or _measure_every(table)
    beacons = {key: _mean_beacon(key, group) for key, group in grouped.items()}
    return BeaconSet(beacons, epochs.pop(), measure_every, frozenset(failed))


def compose(beacons: dict[int, Beacon], batch_sizes: np.ndarray,
            measure_every: int) -> dict[str, np.ndarray]:
    """The predicted per-epoch path (length epochs + 1) of a plan running ``batch_sizes[e-1]``
    in epoch e: ``iterations``, ``samples``, ``measurements``, ``ck_bar``, ``lk``."""
    epochs = len(batch_sizes)
    iterations = np.zeros(epochs + 1)
    samples = np.zeros(epochs + 1)
    lk = np.zeros(epochs + 1)
    for e in range(1, epochs + 1):
        beacon = beacons[int(batch_sizes[e - 1])]
        iterations[e] = iterations[e - 1] + beacon.iterations[e] - beacon.iterations[e - 1]
        samples[e] = samples[e - 1] + beacon.samples[e] - beacon.samples[e - 1]
        lk[e] = lk[e - 1] + beacon.lk[e] - beacon.lk[e - 1]
    measurements = np.ceil(iterations / measure_every)
    c_sum = np.zeros(epochs + 1)
    stage_start = 0
    for e in range(1, epochs + 1):
        if e > 1 and batch_sizes[e - 1] != batch_sizes[e - 2]:
            stage_start = e - 1
        beacon = beacons[int(batch_sizes[e - 1])]
        beacon_m = beacon.measurements(measure_every)
        beacon_s = beacon.c_sum(measure_every)
        taken = beacon_m[e] - beacon_m[stage_start]
        mean_c = ((beacon_s[e] - beacon_s[stage_start]) / taken if taken > 0
                  else beacon.ck_bar[e])
        c_sum[e] = c_sum[stage_start] + mean_c * (measurements[e] - measurements[stage_start])
    with np.errstate(invalid="ignore", divide="ignore"):
        ck_bar = np.where(measurements > 0, c_sum / measurements, np.nan)
    return {"iterations": iterations, "samples": samples, "measurements": measurements,
            "ck_bar": ck_bar, "lk": lk}


def _finished(rows: pd.DataFrame) -> bool:
    fraction = rows["budget_fraction"].iloc[-1] if "budget_fraction" in rows.columns else 1.0
    return bool(fraction >= 1.0 - 1e-9)


def _failed(rows: pd.DataFrame) -> bool:
    """Diverged, or ran its budget without learning."""
    return bool(rows["diverged"].any()) or (_finished(rows) and not _learned(rows))


def _usable(rows: pd.DataFrame) -> bool:
    expected = np.arange(1, len(rows) + 1)
    return bool(_finished(rows) and np.isfinite(rows["ck_bar"]).all()
                and np.isfinite(rows["lk"]).all()
                and np.array_equal(rows["epoch"].to_numpy(), expected))


def _learned(rows: pd.DataFrame) -> bool:
    """The last training loss below the first epoch's, and the last training error not above
    the first epoch's by more than three standard errors of it (n: the first epoch's samples),
    nor, when the first epoch got most samples wrong, short of three below it; a value not
    recorded (NaN) does not count against it."""
    if len(rows) < 2:
        return True
    loss = rows["train_loss"].to_numpy(dtype=float)
    error = rows["train_error"].to_numpy(dtype=float)
    n = float(rows["samples_seen"].iloc[0])
    standard_error = math.sqrt(max(error[0] * (1 - error[0]), 0.0) / n) if n > 0 else math.nan
    drop = error[0] - error[-1]
    rose = drop < -3 * standard_error
    stuck = error[0] > 0.5 and drop <= 3 * standard_error
    return not (loss[-1] >= loss[0] or rose or stuck)


def _base_lr(rows: pd.DataFrame) -> float:
    name = f"{CONFIG_PREFIX}lr"
    if name in rows.columns:
        value = pd.to_numeric(rows[name], errors="coerce").iloc[0]
        if math.isfinite(value) and value > 0:
            return float(f"{value:.7g}")
    return float(f"{float(rows['lr'].iloc[0]):.7g}")


def _measure_every(table: pd.DataFrame) -> int:
    name = f"{CONFIG_PREFIX}measure_every"
    if name not in table.columns:
        return DEFAULT_MEASURE_EVERY
    values = pd.to_numeric(table[name], errors="coerce").dropna().unique()
    if len(values) != 1:
        raise ConfigError(f"beacons have measure_every values {sorted(values)}; pass "
                          "measure_every=<the planned trial's> and beacons measured alike.")
    return int(values[0])


def _mean_beacon(key: tuple[float, int], group: list[pd.DataFrame]) -> Beacon:
    def stacked(name: str) -> np.ndarray:
        values = np.mean([rows[name].to_numpy(dtype=float) for rows in group], axis=0)
        return np.r_[0.0, values]

    return Beacon(key[0], key[1], stacked("iterations"), stacked("samples_seen"),
                  stacked("ck_bar"), stacked("lk"), len(group))
