"""Trials as numpy curves over the budget fraction, the form every predictor works on.

A records table is split by ``trial_id`` into ``Trial`` objects: for each per-epoch column the
points (budget fraction, value) where the value is finite, so a trial's value at any fraction is
a linear interpolation over the epochs that measured it (clamped at both ends: before its first
measurement a trial reads its first value, after its last its last). Measures that are positive by
definition (C̄K, LK, λmax) also get ``log_<name>`` curves (from the positive values only).

Budget fraction: the table's ``budget_fraction`` column, else epoch / ``config/epochs``, else
epoch / ``total_epochs`` when given, else epoch / the trial's last epoch (it is taken as finished).

A trial is *finished* when it reached fraction 1 or diverged (training stops there). Its target
(``final_test_error`` by default) is the table's target column on its last row, or the matching
per-epoch column (``test_error``, ``val_error``) there; a diverged trial without a finite error
gets chance level, 1 - 1/n_classes. A finished trial whose target is still NaN is not used for
fitting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.records.schema import CONFIG_PREFIX
from tune_batchdyn.records.table import validate_table

#: Per-epoch columns kept as curves.
CURVE_COLUMNS: tuple[str, ...] = (
    "ck_bar", "lk", "quality_q", "hessian_top", "val_error", "test_error", "train_loss",
    "iterations", "samples_seen", "batch_size", "lr",
)
#: Positive measures that also get a ``log_<name>`` curve.
LOG_COLUMNS: tuple[str, ...] = ("ck_bar", "lk", "hessian_top")
#: Targets derived from a per-epoch column when the table has no such column.
TARGET_FROM_EPOCH: dict[str, str] = {"final_test_error": "test_error",
                                     "final_val_error": "val_error"}
#: A trial has finished once its budget fraction is this close to 1.
FINISHED_AT = 1.0 - 1e-9


@dataclass(frozen=True)
class Trial:
    """One trial's per-epoch rows, its curves over the budget fraction, and its outcome.

    ``rows``: per-epoch arrays (NaN kept) of ``CURVE_COLUMNS`` plus ``epoch``, ``fraction`` and
    ``diverged``; ``curves``: for each column (and ``log_<name>``), the finite points (fraction,
    value), from ``curves_of(rows)``."""

    trial_id: str
    rows: Mapping[str, np.ndarray]
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]]
    base_lr: float
    final_error: float
    config: Mapping[str, Any] = field(default_factory=dict)
    #: Features already computed, by (name, fraction): a trial's data never change, and the
    #: benchmark reads each finished trial at the same fractions once per fold.
    memo: dict[tuple[str, float], float] = field(default_factory=dict, compare=False,
                                                 repr=False)

    @property
    def fractions(self) -> np.ndarray:
        return self.rows["fraction"]

    @property
    def fraction(self) -> float:
        """Budget fraction reached (of the last row)."""
        return float(self.rows["fraction"][-1])

    @property
    def diverged(self) -> bool:
        return bool(self.rows["diverged"].any())

    @property
    def finished(self) -> bool:
        return self.fraction >= FINISHED_AT or self.diverged

    @property
    def last(self) -> dict[str, float]:
        """The last row's values (NaN kept)."""
        return {name: float(values[-1]) for name, values in self.rows.items()}

    @property
    def strategy(self) -> str:
        """The config's strategy name (``strategy`` or, for a table-form spec, ``strategy/name``);
        without one, ``fixed`` if the batch size never changed, else ``dynamic``."""
        name = self.config.get("strategy", self.config.get("strategy/name"))
        if isinstance(name, str) and name:
            return name
        batches = self.rows["batch_size"]
        return "fixed" if np.all(batches == batches[0]) else "dynamic"

    @property
    def total_epochs(self) -> float:
        """Planned epochs (epochs so far / fraction so far)."""
        return float(self.rows["epoch"][-1]) / self.fraction

    def until(self, fraction: float) -> Trial:
        """The trial as it was at ``fraction`` (its epochs up to there): a running trial."""
        stop = int(np.count_nonzero(self.fractions <= fraction + 1e-9))
        if stop == 0:
            raise ConfigError(f"trial {self.trial_id!r} has no epoch by fraction {fraction}.")
        rows = {name: values[:stop] for name, values in self.rows.items()}
        return Trial(self.trial_id, rows, curves_of(rows), self.base_lr, self.final_error,
                     self.config)

    def at(self, name: str, fraction: float) -> float:
        """The curve ``name`` at ``fraction`` (linear interpolation, clamped; NaN if empty)."""
        x, y = self.curves[name]
        if len(x) == 0:
            return math.nan
        return float(np.interp(fraction, x, y))


def curves_of(rows: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The finite points (fraction, value) of each column, and of ``log_<name>`` for the
    positive measures."""
    fractions = rows["fraction"]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in CURVE_COLUMNS:
        values = rows[name]
        keep = np.isfinite(values)
        curves[name] = (fractions[keep], values[keep])
        if name in LOG_COLUMNS:
            positive = keep & (values > 0)
            curves[f"log_{name}"] = (fractions[positive], np.log(values[positive]))
    return curves


@dataclass(frozen=True)
class TrialSet:
    """Trials parsed from a records table for one target; ``FinalErrorPredictor.fit`` and the
    other predictors accept it in place of the table (the benchmark parses once, fits many)."""

    trials: tuple[Trial, ...]
    target: str
    n_classes: int

    @classmethod
    def from_records(cls, records: pd.DataFrame, target: str = "final_test_error",
                     n_classes: int = 10, total_epochs: float | None = None) -> TrialSet:
        return cls(tuple(trials_from_records(records, target, n_classes, total_epochs)),
                   target, n_classes)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def finished(self) -> list[Trial]:
        """Finished trials with a known target: the ones to learn from."""
        return [t for t in self.trials if t.finished and math.isfinite(t.final_error)]

    def excluding(self, trial_ids: Iterable[str]) -> TrialSet:
        drop = set(trial_ids)
        return TrialSet(tuple(t for t in self.trials if t.trial_id not in drop), self.target,
                        self.n_classes)

    def __add__(self, other: TrialSet) -> TrialSet:
        return TrialSet(self.trials + other.trials, self.target, self.n_classes)


def as_trial_set(records: pd.DataFrame | TrialSet, target: str = "final_test_error",
                 n_classes: int = 10) -> TrialSet:
    """``records`` parsed for ``target`` (a ``TrialSet`` passes through if parsed the same way)."""
    if isinstance(records, TrialSet):
        if records.target != target or records.n_classes != n_classes:
            raise ConfigError(f"records were parsed for target={records.target!r}, "
                              f"n_classes={records.n_classes}; this needs target={target!r}, "
                              f"n_classes={n_classes}.")
        return records
    return TrialSet.from_records(records, target, n_classes)


def trials_from_records(records: pd.DataFrame, target: str = "final_test_error",
                        n_classes: int = 10, total_epochs: float | None = None) -> list[Trial]:
    """Split a records table into ``Trial`` objects (see the module docstring)."""
    validate_table(records)
    if target not in records.columns and target not in TARGET_FROM_EPOCH:
        raise ConfigError(f"target={target!r} is not a column of the records; use a column such "
                          f"as {', '.join(TARGET_FROM_EPOCH)}.")
    if len(records) == 0:
        return []
    ids = records["trial_id"].astype(str).to_numpy()
    epochs = records["epoch"].to_numpy(dtype=float)
    order = np.lexsort((epochs, ids))
    ids, epochs = ids[order], epochs[order]
    fractions = _fractions(records, epochs, order, ids, total_epochs)
    columns = {name: records[name].to_numpy(dtype=float)[order] for name in CURVE_COLUMNS}
    target_values = records[target if target in records.columns
                            else TARGET_FROM_EPOCH[target]].to_numpy(dtype=float)[order]
    diverged = records["diverged"].to_numpy(dtype=bool)[order]
    config_names = [c for c in records.columns if c.startswith(CONFIG_PREFIX)]
    configs = records[config_names].iloc[order] if config_names else None
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    trials = []
    for start, stop in zip(starts, stops, strict=True):
        rows = slice(start, stop)
        config = {} if configs is None else {
            name[len(CONFIG_PREFIX):]: value for name, value in configs.iloc[start].items()}
        trials.append(_trial(str(ids[start]), fractions[rows], epochs[rows],
                             {name: values[rows] for name, values in columns.items()},
                             target_values[stop - 1], diverged[rows], config, n_classes))
    return trials


def _fractions(records: pd.DataFrame, epochs: np.ndarray, order: np.ndarray, ids: np.ndarray,
               total_epochs: float | None) -> np.ndarray:
    fractions = np.full(len(epochs), np.nan)
    if "budget_fraction" in records.columns:
        fractions = records["budget_fraction"].to_numpy(dtype=float)[order]
    planned = np.full(len(epochs), np.nan)
    if f"{CONFIG_PREFIX}epochs" in records.columns:
        planned = pd.to_numeric(records[f"{CONFIG_PREFIX}epochs"], errors="coerce").to_numpy(
            dtype=float)[order]
    if total_epochs is not None:
        planned = np.where(np.isfinite(planned), planned, float(total_epochs))
    last_epoch = pd.Series(epochs).groupby(ids).transform("max").to_numpy(dtype=float)
    planned = np.where(np.isfinite(planned) & (planned > 0), planned, last_epoch)
    return np.where(np.isfinite(fractions), fractions, epochs / planned)


def _trial(trial_id: str, fractions: np.ndarray, epochs: np.ndarray,
           columns: dict[str, np.ndarray], final: float, diverged: np.ndarray,
           config: dict[str, Any], n_classes: int) -> Trial:
    rows = dict(columns)
    rows.update(epoch=epochs, fraction=fractions, diverged=diverged)
    if diverged.any() and not math.isfinite(final):
        final = 1.0 - 1.0 / n_classes
    base_lr = _float(config.get("lr"))
    if not (math.isfinite(base_lr) and base_lr > 0):
        base_lr = float(columns["lr"][0])
    return Trial(trial_id, rows, curves_of(rows), base_lr, float(final), config)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def running_trial(trajectory: pd.DataFrame, *, target: str = "final_test_error",
                  n_classes: int = 10, total_epochs: float | None = None) -> Trial:
    """The one trial in ``trajectory`` (its rows so far). A trajectory straight from
    ``run_trial`` (no ``trial_id``) is accepted; it then needs ``total_epochs`` or
    ``config/epochs`` or ``budget_fraction`` to know how far it is."""
    if not isinstance(trajectory, pd.DataFrame) or len(trajectory) == 0:
        raise ConfigError("trajectory is empty or not a DataFrame; pass the running trial's "
                          "records so far (one row per epoch).")
    if "trial_id" not in trajectory.columns:
        trajectory = trajectory.assign(trial_id="running")
    ids = trajectory["trial_id"].astype(str).unique()
    if len(ids) != 1:
        raise ConfigError(f"trajectory holds {len(ids)} trials ({', '.join(ids[:5])}); pass one "
                          "trial's rows.")
    known = ("budget_fraction" in trajectory.columns
             or f"{CONFIG_PREFIX}epochs" in trajectory.columns or total_epochs is not None)
    if not known:
        raise ConfigError("trajectory has no budget_fraction or config/epochs column; pass "
                          "total_epochs=<the trial's planned epochs>.")
    if target not in trajectory.columns and target not in TARGET_FROM_EPOCH:
        target = "final_test_error"
    return trials_from_records(trajectory, target, n_classes, total_epochs)[0]
