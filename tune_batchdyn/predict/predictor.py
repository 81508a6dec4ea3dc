"""``FinalErrorPredictor``: a running trial's final error, with an uncertainty, from its measures.

For a running trial at budget fraction f, every finished trial is read at the same f (its curves
interpolated there, ``predict.features``), a Gaussian process (``predict.gp``) is fitted from
those features to the finished trials' final errors, and evaluated at the running trial's
features. The regression runs on logit(error) (errors clipped to [0.001, 0.999]), which spreads
the low errors that matter for ranking and keeps predictions inside (0, 1); the predictive
distribution is mapped back by Gauss-Hermite quadrature, so ``mean`` and ``std`` are those of
the error itself.

Rules, checked in order:

1. a running trial that diverged: its own error (chance level 1 - 1/n_classes if NaN), mode
   ``"diverged"``;
2. fewer than ``min_finished`` finished trials: ``extrapolate.cold_start_prediction`` (own
   val-curve power law, bounded by finished trials that dominate it in the (C̄K, LK) plane),
   mode ``"cold-start"``;
3. otherwise the GP, mode ``"gp"``.

``lower_bound(rows, confidence)`` is the error a running trial ends below with probability at
most 1 − ``confidence``, by split-free conformal calibration (jackknife): the GP's mean minus q
predictive standard deviations (logit scale), q the ⌈(n+1)·confidence⌉-th smallest of the n
finished trials' leave-out scores (how far below its leave-out prediction each ended,
``gp.loo_scores``), never below zero. The scores leave each *configuration* (strategy, lr, batch
size) out with all its seeds, as a new configuration arrives without finished siblings: leaving
out one seed at a time lets its siblings vouch for it, and the bound was too tight
(benchmarks/predictor.py, recorded digits grid: the 90% bound held for 52 and 50 of 60 held-out
trials at 10% / 25% of the budget with one seed left out at a time, 53 and 52 with
configurations left out). With too few finished trials for that rank it is NaN: n finished
trials cannot vouch for more than confidence n/(n+1). The bound follows how well the GP actually
predicted the finished trials at that fraction, instead of trusting a normal quantile of a
standard deviation fitted on a handful of trials. ``config_lower_bound(lr, batch_size,
confidence)`` is the same bound for a fixed-batch configuration before it trains, from a GP on
the finished fixed-batch trials' ln lr and ln batch size alone, so a pruner can judge a trial
before its first epoch.

NaN: a feature that no finished trial has at f (a measure not taken) is dropped; a missing value
elsewhere (in a finished or the running trial) is replaced by the finished trials' median of that
feature at f. Finished trials include diverged ones, with their error as target.

Warm start: ``prior_records`` (a table or a records file of earlier studies) adds its finished
trials to the reference set; when both tables name ``config/dataset`` and ``config/model``, only
prior trials on the same dataset and model are kept.

Example::

    predictor = FinalErrorPredictor().fit(records)        # one row per trial and epoch
    guess = predictor.predict(running_rows)                # one trial's rows so far
    guess.mean, guess.std, guess.mode                      # e.g. 0.043, 0.006, "gp"
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.configuration_bound import (
    ConfigurationBound,
    check_confidence,
    conformal_bound,
    logit,
    positive,
)
from tune_batchdyn.predict.extrapolate import cold_start_prediction, diverged_prediction
from tune_batchdyn.predict.features import (
    CONFIG_FEATURES,
    FEATURES,
    PLANE_FEATURES,
    check_features,
    feature_matrix,
)
from tune_batchdyn.predict.gp import GPFit, fit_gp, loo_scores, predict_gp
from tune_batchdyn.predict.result import Prediction
from tune_batchdyn.predict.trials import Trial, TrialSet, as_trial_set, running_trial
from tune_batchdyn.records.io import read_records

#: A fitted GP, its feature columns, their medians and its sorted conformal scores.
_FitAt = tuple[GPFit, tuple[int, ...], np.ndarray, np.ndarray]
#: Gauss-Hermite nodes for mapping the logit-space Gaussian back to errors.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


class FinalErrorPredictor(BaseEstimator):
    """Predict a running trial's final error from its measures (see the module docstring).

    Parameters: ``features`` (names from ``predict.features.FEATURES``), ``target`` (the column
    predicted; ``final_test_error`` or ``final_val_error`` or any column of the table),
    ``min_finished`` (finished trials needed before the GP is used), ``prior_records`` (a table or
    a path, for warm start), ``n_classes`` (for the chance-level error of diverged trials).

    Learned: ``features_`` (validated), ``reference_`` (the finished trials learnt from),
    ``n_finished_``, ``n_prior_``.
    """

    mode_name = "gp"

    def __init__(self, features: Sequence[str] = FEATURES, target: str = "final_test_error",
                 min_finished: int = 5, prior_records: pd.DataFrame | str | os.PathLike | None = (
                     None), n_classes: int = 10) -> None:
        self.features = features
        self.target = target
        self.min_finished = min_finished
        self.prior_records = prior_records
        self.n_classes = n_classes

    def fit(self, records: pd.DataFrame | TrialSet) -> FinalErrorPredictor:
        """Learn from ``records`` (a records table, or a ``TrialSet`` parsed from one)."""
        self.features_ = self._check_params()
        trials = as_trial_set(records, self.target, self.n_classes)
        prior = self._prior_trials(records)
        self.reference_ = tuple(trials.finished() + prior)
        self.n_finished_ = len(self.reference_)
        self.n_prior_ = len(prior)
        self._fits: dict[float, _FitAt | None] = {}
        #: the configuration GP (`config_lower_bound`), fitted on first use: empty until then
        self._config_fit: list[ConfigurationBound | None] = []
        return self

    def predict(self, trajectory: pd.DataFrame | Trial, total_epochs: float | None = None) -> (
            Prediction):
        """Predicted final error of one running trial from its rows so far."""
        trial = self._running(trajectory, total_epochs)
        if trial.diverged:
            return diverged_prediction(trial, self.n_finished_)
        if self.n_finished_ < self.min_finished:
            planes = feature_matrix(self.reference_, PLANE_FEATURES, trial.fraction)
            finals = [t.final_error for t in self.reference_]
            reference = [(*p, e) for p, e in zip(planes, finals, strict=True)]
            return cold_start_prediction(trial, reference)
        return self._gp_prediction(trial)

    def lower_bound(self, trajectory: pd.DataFrame | Trial, confidence: float,
                    total_epochs: float | None = None) -> float:
        """The final error one running trial ends below with probability at most
        1 − ``confidence`` (conformal; see the module docstring); NaN when it cannot be said
        (cold start, or too few finished trials for ``confidence``). A diverged trial's
        bound is its own error."""
        confidence = check_confidence(confidence)
        trial = self._running(trajectory, total_epochs)
        if trial.diverged:
            return diverged_prediction(trial, self.n_finished_).mean
        if self.n_finished_ < self.min_finished:
            return math.nan
        gp = self._gp_at(trial)
        if gp is None:
            return math.nan
        _, mean, std = gp
        return conformal_bound(mean, std, self._fit_at(trial.fraction)[3], confidence)

    def config_lower_bound(self, lr: float, batch_size: float, confidence: float) -> float:
        """The final error a fixed-batch configuration not yet trained ends below with
        probability at most 1 − ``confidence``, from its learning rate and batch size alone
        (``predict.configuration_bound``: a GP on the finished fixed-batch trials' ln lr and
        ln batch size, as configured, with the same conformal margin, whose scores leave each
        configuration out as this one arrives). NaN with fewer than ``min_finished`` such
        trials, too few for ``confidence``, or a non-positive lr or batch size."""
        confidence = check_confidence(confidence)
        self._check_fitted()
        if not self._config_fit:
            fixed = [t for t in self.reference_ if t.strategy == "fixed"
                     and positive(t.base_lr) and positive(t.config.get("batch_size"))]
            self._config_fit.append(None if len(fixed) < self.min_finished else (
                ConfigurationBound.fit([t.base_lr for t in fixed],
                                       [float(t.config["batch_size"]) for t in fixed],
                                       [t.final_error for t in fixed])))
        bound = self._config_fit[0]
        return math.nan if bound is None else bound.lower_bound(lr, batch_size, confidence)

    def _check_fitted(self) -> None:
        if not hasattr(self, "reference_"):
            raise ConfigError(f"{type(self).__name__} is not fitted; call fit(records) first.")

    def _running(self, trajectory: pd.DataFrame | Trial, total_epochs: float | None) -> Trial:
        self._check_fitted()
        return trajectory if isinstance(trajectory, Trial) else running_trial(
            trajectory, target=self.target, n_classes=self.n_classes, total_epochs=total_epochs)

    def _gp_at(self, trial: Trial) -> tuple[GPFit, float, float] | None:
        """The GP fitted at the trial's fraction and its logit-scale mean and std there."""
        fitted = self._fit_at(trial.fraction)
        if fitted is None:
            return None
        fit, columns, medians, _ = fitted
        query = feature_matrix([trial], [self.features_[c] for c in columns], trial.fraction)[0]
        query = np.where(np.isfinite(query), query, medians)
        mean, std = predict_gp(fit, query[None, :])
        return fit, float(mean[0]), float(std[0])

    def _gp_prediction(self, trial: Trial) -> Prediction:
        gp = self._gp_at(trial)
        if gp is None:
            return cold_start_prediction(trial)
        _, mean, std = gp
        error_mean, error_std = _logit_normal_moments(mean, std)
        return Prediction(error_mean, error_std, self.mode_name, trial.fraction,
                          self.n_finished_)

    def _fit_at(self, fraction: float) -> _FitAt | None:
        """The GP at ``fraction``, its feature columns and their medians, and its sorted
        leave-one-configuration-out scores; fitted once and kept (the same inputs give the
        same fit)."""
        key = round(float(fraction), 9)
        if key not in self._fits:
            matrix = feature_matrix(self.reference_, self.features_, fraction)
            columns = tuple(int(c) for c in np.flatnonzero(np.isfinite(matrix).any(axis=0)))
            if not columns:
                self._fits[key] = None
                return None
            matrix = matrix[:, columns]
            medians = np.nanmedian(matrix, axis=0)
            matrix = np.where(np.isfinite(matrix), matrix, medians)
            finals = np.array([t.final_error for t in self.reference_])
            fit = fit_gp(matrix, logit(finals))
            groups = [_configuration(t) for t in self.reference_]
            self._fits[key] = (fit, columns, medians, np.sort(loo_scores(fit, groups)))
        return self._fits[key]

    def _prior_trials(self, records: pd.DataFrame | TrialSet) -> list[Trial]:
        if self.prior_records is None:
            return []
        prior = self.prior_records
        if isinstance(prior, (str, os.PathLike)):
            prior = read_records(prior)
        prior_trials = as_trial_set(prior, self.target, self.n_classes).finished()
        current = [t.config for t in as_trial_set(records, self.target, self.n_classes)]
        keys = {(c.get("dataset"), c.get("model")) for c in current
                if "dataset" in c and "model" in c}
        if keys:
            prior_trials = [t for t in prior_trials
                            if (t.config.get("dataset"), t.config.get("model")) in keys]
        return [_renamed(t, f"prior:{t.trial_id}") for t in prior_trials]

    def _check_params(self) -> tuple[str, ...]:
        features = check_features(self.features)
        if not isinstance(self.min_finished, (int, np.integer)) or self.min_finished < 2:
            raise ConfigError(f"min_finished={self.min_finished!r} is not accepted; use an "
                              "integer of 2 or more (the GP needs two trials to compare).")
        if not isinstance(self.n_classes, (int, np.integer)) or self.n_classes < 2:
            raise ConfigError(f"n_classes={self.n_classes!r} is not accepted; use an integer of "
                              "2 or more.")
        if not isinstance(self.target, str):
            raise ConfigError(f"target={self.target!r} is not accepted; use a column name such "
                              "as 'final_test_error'.")
        return features


class ConfigOnlyPredictor(FinalErrorPredictor):
    """The same regression on the configuration alone (ln lr, ln mean batch size): the baseline
    that tells whether the measures add anything to what the configuration already says."""

    mode_name = "config-gp"

    def __init__(self, target: str = "final_test_error", min_finished: int = 5,
                 prior_records: pd.DataFrame | str | os.PathLike | None = None,
                 n_classes: int = 10) -> None:
        super().__init__(CONFIG_FEATURES, target, min_finished, prior_records, n_classes)


def _configuration(trial: Trial) -> tuple:
    """What a trial's seeds share: strategy, learning rate and batch size."""
    return (trial.strategy, trial.base_lr, trial.config.get("batch_size"))


def _renamed(trial: Trial, trial_id: str) -> Trial:
    return Trial(trial_id, trial.rows, trial.curves, trial.base_lr, trial.final_error,
                 trial.config)


def _logit_normal_moments(mean: float, std: float) -> tuple[float, float]:
    """Mean and std of sigmoid(z) for z ~ N(mean, std²) (Gauss-Hermite quadrature)."""
    values = 1.0 / (1.0 + np.exp(-(mean + std * _NODES)))
    first = float(np.dot(_WEIGHTS, values))
    second = float(np.dot(_WEIGHTS, values * values))
    return first, math.sqrt(max(second - first * first, 0.0))
