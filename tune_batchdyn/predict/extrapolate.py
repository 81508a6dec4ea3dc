"""Rules that need no other trial: a diverged trial's error, a power law through the val curve,
and the cold-start rule built from them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tune_batchdyn.predict.result import Prediction
from tune_batchdyn.predict.trials import Trial

#: Smallest standard deviation the cold-start rule reports (it has no reference trials to
#: calibrate against, so it claims no better than ±5 points of error).
COLD_START_MIN_STD = 0.05


def diverged_prediction(trial: Trial, n_reference: int = 0) -> Prediction:
    """A diverged trial ends where it is: its own error (chance level when that is NaN)."""
    return Prediction(trial.final_error, 0.0, "diverged", trial.fraction, n_reference)


def power_law_final(trial: Trial) -> float:
    """Val error extrapolated to the end of the budget by a power law, e(f) = a f^b.

    Least squares of ln e on ln f over the epochs so far. With fewer than two positive points,
    or a fitted curve that does not fall (b >= 0), the current val error is returned: the rule
    never predicts that the error will grow. The result lies between 0 and the current error.
    """
    fractions, errors = trial.curves["val_error"]
    if len(errors) == 0:
        return math.nan
    current = float(errors[-1])
    keep = (errors > 0) & (fractions > 0)
    if np.count_nonzero(keep) < 2 or trial.fraction >= 1.0:
        return current
    slope, intercept = np.polyfit(np.log(fractions[keep]), np.log(errors[keep]), 1)
    if not slope < 0:
        return current
    return float(np.clip(math.exp(intercept), 0.0, current))


def cold_start_prediction(trial: Trial, planes: Sequence[tuple[float, float, float]] = ()) -> (
        Prediction):
    """The rule used before enough trials have finished.

    mean = the trial's own power-law extrapolation of its val error, raised to the lowest final
    error among the finished trials that *dominate* it in the seed's plane (both C̄K and LK
    smaller at the same fraction: the seed finds that good configurations keep both measures
    small, so a trial with larger values of both is predicted no better than such a trial).
    ``planes`` holds (ln C̄K, ln LK, final error) of the finished trials at the trial's fraction.
    std = the distance between that mean and the current val error, at least
    ``COLD_START_MIN_STD``. A trial without any val error yet gets NaN (no basis for a guess;
    schedulers treat a missing value as "continue").
    """
    extrapolated = power_law_final(trial)
    current = trial.last["val_error"]
    mean = extrapolated
    ck, lk = trial.at("log_ck_bar", trial.fraction), trial.at("log_lk", trial.fraction)
    dominating = [err for c, lk_p, err in planes if c < ck and lk_p < lk]
    if dominating and math.isfinite(mean):
        mean = max(mean, min(dominating))
    spread = abs(mean - current) if math.isfinite(current) else math.nan
    std = max(spread, COLD_START_MIN_STD) if math.isfinite(spread) else math.nan
    return Prediction(mean, std, "cold-start", trial.fraction, len(planes))
