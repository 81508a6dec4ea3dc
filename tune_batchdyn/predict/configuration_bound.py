"""A conformal lower bound on an error of a configuration not yet trained, from lr and batch size.

A GP (``predict.gp``) from the ln lr and ln batch size of the trials already measured to
logit(error), its margin calibrated as ``FinalErrorPredictor.lower_bound``'s: the bound is the
GP's mean minus q predictive standard deviations (logit scale), q the ⌈(n+1)·confidence⌉-th
smallest of the n leave-out scores (``gp.loo_scores``), never below zero, so the error ends
below it with probability at most 1 − confidence. The scores leave each configuration (lr,
batch size) out with all its seeds, as a new one arrives without measured siblings. With too
few trials for that rank the bound is NaN: n trials cannot vouch for more than confidence
n/(n+1).

Two errors are bounded so: a fixed-batch configuration's final error
(``FinalErrorPredictor.config_lower_bound``) and its value at a pruner's rungs
(``MeasurePruner``), each from the trials that measured it.

Example::

    bound = ConfigurationBound.fit(lrs, batch_sizes, errors)
    bound.lower_bound(0.1, 64, confidence=0.9)        # e.g. 0.27, or NaN
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tune_batchdyn.errors import ConfigError
from tune_batchdyn.predict.gp import GPFit, fit_gp, loo_scores, predict_gp

#: Errors are clipped to this interval before the logit.
ERROR_CLIP = (1e-3, 1.0 - 1e-3)


@dataclass(frozen=True)
class ConfigurationBound:
    """The GP on (ln lr, ln batch size) and its sorted leave-one-configuration-out scores."""

    gp: GPFit
    scores: np.ndarray

    @classmethod
    def fit(cls, lrs: Sequence[float], batch_sizes: Sequence[float],
            errors: Sequence[float]) -> ConfigurationBound:
        """Fit on measured trials: one lr, batch size (both positive) and error each."""
        configurations = list(zip(lrs, batch_sizes, strict=True))
        gp = fit_gp(np.log(np.array(configurations, dtype=float)), logit(np.asarray(errors)))
        return cls(gp, np.sort(loo_scores(gp, configurations)))

    def lower_bound(self, lr: float, batch_size: float, confidence: float) -> float:
        """The error the configuration ends below with probability at most 1 − confidence;
        NaN with too few trials for ``confidence`` or a non-positive lr or batch size."""
        confidence = check_confidence(confidence)
        if not (positive(lr) and positive(batch_size)):
            return math.nan
        mean, std = predict_gp(self.gp, np.log([[float(lr), float(batch_size)]]))
        return conformal_bound(float(mean[0]), float(std[0]), self.scores, confidence)


def conformal_bound(mean: float, std: float, scores: np.ndarray, confidence: float) -> float:
    """sigmoid(mean − q·std), q the ⌈(n+1)·confidence⌉-th smallest of the n sorted
    leave-out ``scores`` (never below 0); NaN when n is too small for that rank."""
    rank = math.ceil((len(scores) + 1) * confidence)
    if rank > len(scores):
        return math.nan
    margin = max(float(scores[rank - 1]), 0.0)
    return float(1.0 / (1.0 + math.exp(-(mean - margin * std))))


def check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, (float, int, np.floating)) and 0.0 < confidence < 1.0):
        raise ConfigError(f"confidence={confidence!r} is not accepted; use a probability "
                          "in (0, 1), e.g. 0.9.")
    return float(confidence)


def positive(value: object) -> bool:
    """A finite number above zero (not a bool)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool) and math.isfinite(value) and value > 0


def logit(errors: np.ndarray) -> np.ndarray:
    clipped = np.clip(errors, *ERROR_CLIP)
    return np.log(clipped) - np.log1p(-clipped)
