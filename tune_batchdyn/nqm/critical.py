"""Critical batch size from a steps-vs-batch curve, and the information-theoretic bound.

Fit ``S(B) = S_min (1 + B_crit / B)`` (Shallue et al., McCandlish et al.): ``S_min`` is the
large-batch plateau and ``S_min * B_crit`` the small-batch product ``steps x B``. The fit is by
least squares on ``log S`` (each batch size counts equally though steps span decades), over
``(log S_min, log B_crit)`` so both stay positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from tune_batchdyn.nqm.spectrum import Spectrum

#: Fewest curve points the two-parameter fit accepts.
MIN_POINTS = 3


@dataclass(frozen=True)
class CriticalBatchFit:
    """Result of :func:`fit_critical_batch` (SciPy ``OptimizeResult`` style)."""

    b_crit: float
    s_min: float
    success: bool
    message: str
    rms_log_error: float  # root-mean-square residual of log S

    def predict(self, batch_sizes: np.ndarray) -> np.ndarray:
        """``S_min (1 + B_crit / B)``."""
        return self.s_min * (1.0 + self.b_crit / np.asarray(batch_sizes, dtype=float))


def fit_critical_batch(batch_sizes: np.ndarray, steps: np.ndarray) -> CriticalBatchFit:
    """Fit ``S(B) = S_min (1 + B_crit / B)`` to the finite, positive points of a curve.

    Needs three such points at distinct batch sizes (two would fit any curve exactly);
    otherwise ``success`` is False and the values are NaN.
    """
    batches = np.asarray(batch_sizes, dtype=float)
    counts = np.asarray(steps, dtype=float)
    keep = np.isfinite(counts) & (counts > 0) & np.isfinite(batches) & (batches > 0)
    batches, counts = batches[keep], counts[keep]
    if np.unique(batches).size < MIN_POINTS:
        return CriticalBatchFit(np.nan, np.nan, False,
                                f"need finite steps at {MIN_POINTS} or more batch sizes", np.nan)
    log_steps = np.log(counts)

    def residuals(params: np.ndarray) -> np.ndarray:
        log_s_min, log_b_crit = params
        return log_s_min + np.log1p(np.exp(log_b_crit) / batches) - log_steps

    s_min0 = counts.min()
    b_crit0 = max(counts[np.argmin(batches)] * batches.min() / s_min0, 1e-12)
    result = least_squares(residuals, x0=[np.log(s_min0), np.log(b_crit0)], method="lm")
    log_s_min, log_b_crit = result.x
    rms = float(np.sqrt(np.mean(result.fun**2)))
    return CriticalBatchFit(float(np.exp(log_b_crit)), float(np.exp(log_s_min)),
                            bool(result.success), str(result.message), rms)


def lower_bound_steps(problem: Spectrum, batch_sizes: np.ndarray, target: float) -> np.ndarray:
    """Steps at batch size ``B`` below which no optimiser reaches ``target`` on average.

    Each gradient query observes ``H x*`` with noise covariance ``C``, so after ``N`` queries the
    maximum-likelihood estimate has covariance ``H^-1 C H^-1 / N`` and risk
    ``sum_i c_i / h_i / (2N)`` (with ``C = H`` the seed's ``d / (2N)``, section 3.6; like the
    seed, the prior on ``x(0)`` is not used). Setting it to ``target`` with ``N = steps * B``
    gives ``sum_i c_i / h_i / (2 target B)``, the seed's dashed line. A target at or above the
    initial risk needs no step, so there the bound is 0 (as the steps to target are).
    """
    batches = np.asarray(batch_sizes, dtype=float)
    if target >= problem.initial_risk():
        return np.zeros(batches.shape)
    information = float(np.sum(problem.count * problem.noise / problem.curvature))
    return information / (2.0 * target * batches)
