"""Baselines the benchmark compares ``FinalErrorPredictor`` with; same ``fit`` / ``predict``.

- ``NearestNeighbourPredictor``: the seed's own rule: the mean final error of the 5 finished
  trials nearest the running trial in the (ln C̄K, ln LK) plane at the same budget fraction
  (std: their spread), mode ``"knn5"``. Finished trials without finite C̄K and LK at that
  fraction are left out; with fewer than k left, or no finite point for the running trial,
  the cold-start rule answers.
- ``CurrentValErrorPredictor``: the running trial's current val error (std NaN), mode ``"val"``.
- ``PowerLawPredictor``: its val curve extrapolated by a power law to the end of the budget
  (std: the distance from the current val error), mode ``"powerlaw"``.
- ``ConfigOnlyPredictor`` (in ``predict.predictor``): the GP on ln lr and ln batch size only.

Every rule predicts a diverged running trial's own error (``"diverged"``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.extrapolate import (
    cold_start_prediction,
    diverged_prediction,
    power_law_final,
)
from tune_batchdyn.predict.features import PLANE_FEATURES, feature_matrix
from tune_batchdyn.predict.neighbours import nearest_average
from tune_batchdyn.predict.result import Prediction
from tune_batchdyn.predict.trials import Trial, TrialSet, as_trial_set, running_trial


class _TrajectoryRule(BaseEstimator, ABC):
    """Shared plumbing: fit keeps the finished trials, predict parses the trajectory."""

    def __init__(self, target: str = "final_test_error", n_classes: int = 10) -> None:
        self.target = target
        self.n_classes = n_classes

    def fit(self, records: pd.DataFrame | TrialSet) -> _TrajectoryRule:
        self.reference_ = tuple(as_trial_set(records, self.target, self.n_classes).finished())
        self.n_finished_ = len(self.reference_)
        return self

    def predict(self, trajectory: pd.DataFrame | Trial, total_epochs: float | None = None) -> (
            Prediction):
        if not hasattr(self, "reference_"):
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(records) first.")
        trial = trajectory if isinstance(trajectory, Trial) else running_trial(
            trajectory, target=self.target, n_classes=self.n_classes, total_epochs=total_epochs)
        if trial.diverged:
            return diverged_prediction(trial, self.n_finished_)
        return self._rule(trial)

    @abstractmethod
    def _rule(self, trial: Trial) -> Prediction:
        """The prediction for a running trial that has not diverged."""


class NearestNeighbourPredictor(_TrajectoryRule):
    """The seed's rule: average final error of the k nearest finished trials in the plane."""

    def __init__(self, k: int = 5, target: str = "final_test_error", n_classes: int = 10) -> None:
        super().__init__(target, n_classes)
        self.k = k

    def fit(self, records: pd.DataFrame | TrialSet) -> NearestNeighbourPredictor:
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ConfigError(f"k={self.k!r} is not accepted; use a positive integer.")
        super().fit(records)
        return self

    def _rule(self, trial: Trial) -> Prediction:
        points = feature_matrix(self.reference_, PLANE_FEATURES, trial.fraction)
        finals = np.array([t.final_error for t in self.reference_])
        usable = np.isfinite(points).all(axis=1)
        query = feature_matrix([trial], PLANE_FEATURES, trial.fraction)
        if np.count_nonzero(usable) < self.k or not np.isfinite(query).all():
            return cold_start_prediction(
                trial, [(*p, e) for p, e in zip(points[usable], finals[usable], strict=True)])
        mean, std = nearest_average(points[usable], finals[usable], query, self.k)
        return Prediction(float(mean[0]), float(std[0]), f"knn{self.k}", trial.fraction,
                          int(np.count_nonzero(usable)))


class CurrentValErrorPredictor(_TrajectoryRule):
    """The running trial's current val error, taken as its final error."""

    def _rule(self, trial: Trial) -> Prediction:
        return Prediction(trial.last["val_error"], math.nan, "val", trial.fraction,
                          self.n_finished_)


class PowerLawPredictor(_TrajectoryRule):
    """The running trial's val curve extrapolated by a power law (``power_law_final``)."""

    def _rule(self, trial: Trial) -> Prediction:
        mean = power_law_final(trial)
        return Prediction(mean, abs(mean - trial.last["val_error"]), "powerlaw", trial.fraction,
                          self.n_finished_)
