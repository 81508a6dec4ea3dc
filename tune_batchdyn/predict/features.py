"""Features of a trial at a budget fraction f, the same for finished and running trials.

========================  =====================================================================
``log_ck_bar``            ln C̄K at f (interpolated in log space)
``log_lk``                ln LK at f
``quality_q``             stable-rank quality Q at f
``log_hessian_top``       ln λmax at f
``val_error``             validation error at f
``val_error_trend``       val error at f minus val error at f/2 (the curve's recent slope)
``log_lr``                ln of the base learning rate (``config/lr``, else the first epoch's)
``log_batch``             ln of the mean batch size so far, samples_seen / iterations at f
========================  =====================================================================

A finished trial is read at the running trial's fraction (its curves interpolated there), so
trials with different epoch counts line up by how far through their budget they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.trials import Trial

FEATURES: tuple[str, ...] = (
    "log_ck_bar", "log_lk", "quality_q", "log_hessian_top", "val_error", "val_error_trend",
    "log_lr", "log_batch",
)
#: Groups of features, for ablations (the benchmark drops one group at a time).
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "ck_bar": ("log_ck_bar",),
    "lk": ("log_lk",),
    "curvature": ("quality_q", "log_hessian_top"),
    "val_curve": ("val_error", "val_error_trend"),
    "config": ("log_lr", "log_batch"),
}
#: The configuration-only baseline's features.
CONFIG_FEATURES: tuple[str, ...] = FEATURE_GROUPS["config"]
#: The seed's plane.
PLANE_FEATURES: tuple[str, ...] = ("log_ck_bar", "log_lk")


def check_features(features: Sequence[str]) -> tuple[str, ...]:
    """``features`` as a tuple, or ``ConfigError`` naming an unknown one."""
    if isinstance(features, str) or not len(features):
        raise ConfigError(f"features={features!r} is not accepted; use a non-empty list from: "
                          f"{', '.join(FEATURES)}.")
    for name in features:
        if name not in FEATURES:
            raise ConfigError(f"features contains {name!r}; use names from: "
                              f"{', '.join(FEATURES)}.")
    return tuple(features)


def feature_value(trial: Trial, name: str, fraction: float) -> float:
    """One feature of ``trial`` at ``fraction`` (NaN when the trial lacks what it needs)."""
    key = (name, float(fraction))
    if key not in trial.memo:
        trial.memo[key] = _compute(trial, name, fraction)
    return trial.memo[key]


def _compute(trial: Trial, name: str, fraction: float) -> float:
    if name in ("log_ck_bar", "log_lk", "log_hessian_top", "quality_q", "val_error"):
        return trial.at(name, fraction)
    if name == "val_error_trend":
        return trial.at("val_error", fraction) - trial.at("val_error", fraction / 2)
    if name == "log_lr":
        return math.log(trial.base_lr) if trial.base_lr > 0 else math.nan
    if name == "log_batch":
        iterations = trial.at("iterations", fraction)
        samples = trial.at("samples_seen", fraction)
        if iterations > 0 and samples > 0:
            return math.log(samples / iterations)
        batch = trial.at("batch_size", fraction)
        return math.log(batch) if batch > 0 else math.nan
    raise ConfigError(f"feature={name!r} is not accepted; use one of: {', '.join(FEATURES)}.")


def feature_matrix(trials: Sequence[Trial], names: Sequence[str], fraction: float) -> np.ndarray:
    """Features of each trial at ``fraction``: an array (len(trials), len(names)), NaN kept."""
    matrix = np.empty((len(trials), len(names)))
    for row, trial in enumerate(trials):
        for col, name in enumerate(names):
            matrix[row, col] = feature_value(trial, name, fraction)
    return matrix
