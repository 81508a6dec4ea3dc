"""``OptimumRegion``: where in the (C̄K, LK) plane the lowest final errors lie.

The seed (§3.1, §4.1, Fig. 1b/3) plots finished trials in the plane of ln C̄K and ln LK, draws
the contour map of the final error where each grid value averages the 5 nearest trials' errors,
and calls the level set of minimum error the *optimum region*. Here:

- err5(p) = mean final error of the ``k`` finished trials nearest p (``nearest_average``), all
  trials read at budget fraction ``fraction`` (1.0: their end points);
- the *support* is the convex hull of the trials' points (where the data say something: a cell
  of the k-nearest map can reach to infinity, and its far corners are not the optimum); with
  fewer than three points, or all on a line, it is their bounding box padded by ``margin`` of
  its range on every side;
- threshold = the minimum of err5 over a ``grid_size``² grid of the padded box, restricted to
  the support, and over the trials' own points, plus ``tolerance`` (0: the seed's exact minimum
  level set; err5 is piecewise constant, so that set is a union of cells of the plane);
- the region = the points of the support with err5 <= threshold.

``centre_`` is the mean of the region's grid points and member trials (in log coordinates,
reported as C̄K and LK), ``extent_`` their range. ``contains`` evaluates err5 exactly, not on the
grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial import Delaunay, QhullError
from sklearn.base import BaseEstimator

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.features import PLANE_FEATURES, feature_matrix
from tune_batchdyn.predict.neighbours import nearest_average
from tune_batchdyn.predict.trials import Trial, TrialSet, as_trial_set, running_trial


def informative_k(k: int, n_trials: int) -> int:
    """The k-nearest count for a map of ``n_trials`` finished trials: ``k``, but at most half
    of them. With k trials or fewer the k nearest are all of them everywhere, the map is flat
    and the region is every point among the trials, so a plan aimed at it aims at their
    middle, not at the best."""
    return min(int(k), max(1, int(n_trials) // 2))


class OptimumRegion(BaseEstimator):
    """The level set of lowest k-nearest-average final error in the (ln C̄K, ln LK) plane.

    Learned: ``points_`` (n, 2: ln C̄K, ln LK of the finished trials at ``fraction``),
    ``errors_``, ``trial_ids_``, ``threshold_``, ``best_error_``, ``bounds_`` (the padded box,
    log coordinates, ((ck_lo, ck_hi), (lk_lo, lk_hi))), ``centre_log_``, ``centre_`` (C̄K, LK),
    ``extent_`` (((ck_lo, ck_hi), (lk_lo, lk_hi)) in C̄K, LK units), ``grid_`` (the grid axes, the
    err5 values and the support mask, for plotting).

    Example::

        region = OptimumRegion(fraction=1.0).fit(records)
        region.contains((ck_bar, lk)), region.centre_
    """

    def __init__(self, fraction: float = 1.0, k: int = 5, tolerance: float = 0.0,
                 grid_size: int = 200, margin: float = 0.1, target: str = "final_test_error",
                 n_classes: int = 10) -> None:
        self.fraction = fraction
        self.k = k
        self.tolerance = tolerance
        self.grid_size = grid_size
        self.margin = margin
        self.target = target
        self.n_classes = n_classes

    def fit(self, records: pd.DataFrame | TrialSet) -> OptimumRegion:
        """Locate the region from the finished trials of ``records``."""
        self._check_params()
        trials = as_trial_set(records, self.target, self.n_classes).finished()
        points = feature_matrix(trials, PLANE_FEATURES, self.fraction)
        usable = np.isfinite(points).all(axis=1)
        if not usable.any():
            raise ConfigError(f"records have no finished trial with finite C̄K and LK at "
                              f"fraction={self.fraction}; the region needs at least one.")
        self.points_ = points[usable]
        self.errors_ = np.array([t.final_error for t in trials])[usable]
        self.trial_ids_ = tuple(t.trial_id for t, ok in zip(trials, usable, strict=True) if ok)
        low, high = self.points_.min(axis=0), self.points_.max(axis=0)
        pad = np.where(high > low, (high - low) * self.margin, 0.5)
        self.bounds_ = ((low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1]))
        ck_axis = np.linspace(*self.bounds_[0], self.grid_size)
        lk_axis = np.linspace(*self.bounds_[1], self.grid_size)
        grid = np.stack(np.meshgrid(ck_axis, lk_axis), axis=-1).reshape(-1, 2)
        self._hull = _hull(self.points_)
        supported = self._in_support(grid)
        grid_error = nearest_average(self.points_, self.errors_, grid, self.k)[0]
        point_error = nearest_average(self.points_, self.errors_, self.points_, self.k)[0]
        self.best_error_ = float(min(grid_error[supported].min(initial=np.inf),
                                     point_error.min()))
        self.threshold_ = self.best_error_ + float(self.tolerance)
        members = np.concatenate([grid[supported & (grid_error <= self.threshold_ + 1e-12)],
                                  self.points_[point_error <= self.threshold_ + 1e-12]])
        self.centre_log_ = tuple(float(v) for v in members.mean(axis=0))
        self.centre_ = (math.exp(self.centre_log_[0]), math.exp(self.centre_log_[1]))
        step = np.array([ck_axis[1] - ck_axis[0], lk_axis[1] - lk_axis[0]]) / 2
        lo, hi = members.min(axis=0) - step, members.max(axis=0) + step
        self.extent_ = ((math.exp(lo[0]), math.exp(hi[0])), (math.exp(lo[1]), math.exp(hi[1])))
        self.grid_ = (ck_axis, lk_axis, grid_error.reshape(self.grid_size, self.grid_size),
                      supported.reshape(self.grid_size, self.grid_size))
        return self

    def error_at(self, points: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """err5 (mean and spread of the k nearest final errors) at (C̄K, LK) points."""
        self._check_fitted()
        logs = _log_points(points)
        return nearest_average(self.points_, self.errors_, logs, self.k)

    def contains(self, point: Sequence[float]) -> bool:
        """Whether the point (C̄K, LK), in plain units, lies in the region."""
        self._check_fitted()
        logs = _log_points(point)[0]
        if not np.isfinite(logs).all():
            return False
        if not self._in_support(logs[None, :])[0]:
            return False
        return bool(self.error_at(point)[0][0] <= self.threshold_ + 1e-12)

    def contains_trajectory(self, trajectory: pd.DataFrame | Trial,
                            total_epochs: float | None = None) -> bool:
        """Whether a running trial, read at the region's fraction, lies in the region.

        The trial must have reached that fraction (fit the region at a fraction no later than
        the trials you test)."""
        self._check_fitted()
        trial = trajectory if isinstance(trajectory, Trial) else running_trial(
            trajectory, target=self.target, n_classes=self.n_classes, total_epochs=total_epochs)
        if trial.fraction + 1e-9 < self.fraction:
            raise ConfigError(f"trajectory reached fraction {trial.fraction:.3g}, before the "
                              f"region's fraction={self.fraction}; fit the region at a fraction "
                              "the trial has reached.")
        logs = feature_matrix([trial], PLANE_FEATURES, self.fraction)[0]
        return self.contains(tuple(np.exp(logs)))

    def _in_support(self, logs: np.ndarray) -> np.ndarray:
        """Whether log-plane points lie in the trials' hull (or padded box, see above)."""
        if self._hull is not None:
            return self._hull.find_simplex(logs, tol=1e-9) >= 0
        (ck_lo, ck_hi), (lk_lo, lk_hi) = self.bounds_
        return ((logs[:, 0] >= ck_lo) & (logs[:, 0] <= ck_hi) & (logs[:, 1] >= lk_lo)
                & (logs[:, 1] <= lk_hi))

    def _check_params(self) -> None:
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction <= 1):
            raise ConfigError(f"fraction={self.fraction!r} is not accepted; use a number in "
                              "(0, 1].")
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ConfigError(f"k={self.k!r} is not accepted; use a positive integer.")
        if not isinstance(self.grid_size, (int, np.integer)) or self.grid_size < 2:
            raise ConfigError(f"grid_size={self.grid_size!r} is not accepted; use 2 or more.")
        if not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise ConfigError(f"tolerance={self.tolerance!r} is not accepted; use a number >= 0.")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ConfigError(f"margin={self.margin!r} is not accepted; use a number >= 0.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "points_"):
            raise ConfigError("OptimumRegion is not fitted; call fit(records) first.")


def _hull(points: np.ndarray) -> Delaunay | None:
    """The Delaunay triangulation of the points (their convex hull), None when degenerate."""
    if len(np.unique(points, axis=0)) < 3:
        return None
    try:
        return Delaunay(points)
    except QhullError:
        return None


def _log_points(points: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.atleast_2d(np.asarray(points, dtype=float))
    if array.shape[-1] != 2:
        raise ConfigError(f"point={points!r} is not accepted; give (ck_bar, lk) pairs.")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(array)
